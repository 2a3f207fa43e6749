"""eval.json as a typed document (evaluation/document.py): ``evaluate`` writes exactly its ``to_json``,
``from_json`` reads it back exactly, eval.md is rendered from the typed object."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from typing import Any

import pytest

from accelport.evaluation import EvalConfig, evaluate
from accelport.evaluation.document import EvalDocument
from accelport.preprocess import DEFAULT_SAMPLES_DIR

# eval.json's keys in order, as the untyped code (commit 38bc6a0) wrote them: the schema this module must keep
TOP_KEYS = ["kind", "status", "pretrained_used", "local_weight_used", "weight_path", "weight_sha256", "weights",
            "schema_version", "created_utc", "wall_time_s", "model", "target", "reference", "environment", "dataset",
            "run", "criteria", "throughput", "accuracy", "agreement", "distributions", "checks", "worst_images",
            "classes_most_disagreement"]
SECTION_KEYS = {"dataset": ["root", "num_images", "num_evaluated", "labels", "skipped"],
                "run": ["world_size", "backend", "master_addr", "batch_size", "workers", "resumed_images",
                        "evaluated_now", "reference_cache"],
                "throughput": ["stages", "loader_workers", "data_wait_s", "data_wait_share", "bottleneck", "raw"]}


def as_text(document: dict[str, Any]) -> str:
    """The JSON text of a document: equal texts mean equal keys, values and key order."""
    return json.dumps(document, allow_nan=True)


@pytest.mark.usefixtures("one_torch_thread")
def test_eval_writes_its_typed_document_and_reads_it_back_exactly(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for name in ("chelsea.jpg", "coffee.jpg"):
        shutil.copy(DEFAULT_SAMPLES_DIR / name, data / name)
    result = evaluate(EvalConfig.of(data=str(data), out_dir=str(tmp_path / "out"), model="test_convnext2",
                                    device="cpu", batch_size=2, workers=0, progress=False, hub_timeout_s=1.0))
    written = json.loads((tmp_path / "out" / "eval.json").read_text())
    document = result.document
    assert document is not None
    assert as_text(document.to_json()) == as_text(written)
    assert as_text(EvalDocument.from_json(written).to_json()) == as_text(written)
    assert list(written) == TOP_KEYS and {k: list(written[k]) for k in SECTION_KEYS} == SECTION_KEYS
    assert all(list(c) == ["name", "value", "op", "threshold", "passed", "detail"] for c in written["checks"])
    assert written["status"] == "passed" and written["dataset"]["num_evaluated"] == 2
    markdown = (tmp_path / "out" / "eval.md").read_text()
    assert markdown == document.to_markdown("eval_hist.png" if "histogram" in result.artifacts else None)
    assert "**Status: PASSED**" in markdown and f"`{data}`, 2 images, 2 evaluated" in markdown
    assert f"allocator: {document.header.environment['allocator']['settings']}" in markdown  # its throughput
    assert all(f"| {c.name} |" in markdown for c in document.checks)
    failed = replace(document, checks=(replace(document.checks[0], passed=False), *document.checks[1:]))
    assert failed.to_json()["status"] == "failed" and "**Status: FAILED**" in failed.to_markdown()
    assert f"| {document.checks[0].name} |" in failed.to_markdown() and "**FAIL** |" in failed.to_markdown()
