"""bench.json, eval.json and zoo.json as typed documents: each command writes exactly its document's ``to_json``,
``from_json`` reads a written (or an older, saved) document back exactly, and the Markdown is rendered from the
typed object's attributes."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from accelport.bench.api import run_bench
from accelport.bench.config import BenchConfig
from accelport.bench.document import BenchDocument
from accelport.bench.rows import BatchPick, BenchRow, PeerComparison
from accelport.cli import main
from accelport.evaluation import EvalConfig, evaluate
from accelport.evaluation.document import EvalDocument
from accelport.preprocess import DEFAULT_SAMPLES_DIR
from accelport.zoo.document import ZooDocument
from accelport.zoo.report import CSV_FIELDS

REPO = Path(__file__).resolve().parent.parent
SAVED_BENCH = REPO / "benchmarks" / "results"


def as_text(document: dict[str, Any]) -> str:
    """The JSON text of a document: equal texts mean equal keys, values and key order."""
    return json.dumps(document, allow_nan=True)


# bench.json -----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bench_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench_doc")
    config = BenchConfig.of(model="test_convnext2", device="cpu", runtimes=("eager",), dtypes=("fp32",),
                            batch_sizes=(1, 2), warmup=1, iters=3, max_time_s=1.0, progress=False, plot=False,
                            peers=False, out_dir=str(out), cache_dir=str(out / "cache"))
    return run_bench(config), out


@pytest.mark.usefixtures("one_torch_thread")
def test_bench_writes_its_typed_document_and_reads_it_back_exactly(bench_run):
    result, out = bench_run
    written = json.loads((out / "bench.json").read_text())
    document = result.document
    assert as_text(document.to_json()) == as_text(written)
    assert as_text(BenchDocument.from_json(written).to_json()) == as_text(written)
    assert (out / "bench.md").read_text() == document.to_markdown()
    assert [(r.label, r.batch_size) for r in document.rows] == [("eager fp32", 1), ("eager fp32", 2)]
    assert document.peer_comparison == () and "No peer rows (`--no-peers`)." in document.to_markdown()


@pytest.mark.usefixtures("one_torch_thread")
def test_bench_markdown_reads_the_typed_rows_and_pick(bench_run):
    document = bench_run[0].document
    markdown = document.to_markdown()
    for row in document.rows:
        assert f"| {row.label} | {row.batch_size} | {row.latency['p50_ms']:.2f} | {row.latency['p90_ms']:.2f} |" \
            in markdown
    assert all(f"- batch {p.batch_size}: **{p.fastest}**, {p.fastest_p50_ms:.2f} ms p50" in markdown
               for p in document.pick or ())
    broken = replace(document.rows[0], parity={**document.rows[0].parity, "passed": False,
                                               "failed_checks": ["min_sample_cosine"]})
    failing = replace(document, rows=(broken, *document.rows[1:])).to_markdown()
    assert "**FAIL** (fp32: min_sample_cosine)" in failing and "**FAIL**" not in markdown


def test_saved_bench_documents_read_back_exactly():
    """An older bench.json (no peer rows, no timing verdicts) and the sections of later ones."""
    saved = json.loads((SAVED_BENCH / "bench_runtimes_cpu_epyc_2core.json").read_text())["bench"]
    document = BenchDocument.from_json(saved)
    assert document.to_json() == saved
    assert document.peer_comparison is None and document.timing_reliability is None
    assert document.rows[0].kind is None and "kind" not in document.rows[0].to_json()
    assert f"- batch 1: **{saved['pick'][0]['fastest']}**" in document.to_markdown()
    for name in ("bench_partial_cpu_epyc_2core_loaded.json", "bench_partial_cpu_epyc_2core_loaded_rounds2plus.json"):
        partial = json.loads((SAVED_BENCH / name).read_text())
        for kind, entries in ((BenchRow, partial["rows"]), (BatchPick, partial["pick"]),
                              (PeerComparison, partial["peer_comparison"])):
            assert [as_text(kind.from_json(e).to_json()) for e in entries] == [as_text(e) for e in entries]


def test_a_row_key_this_version_does_not_know_is_kept():
    row = {"label": "x int8", "runtime": "x", "dtype": "int8", "channels_last": False, "streams": 1, "micro_batch": 0,
           "kind": "accelport", "peer": None, "batch_size": 1, "status": "unsupported", "reason": "no engine",
           "calibration": {"images": 6}}
    assert as_text(BenchRow.from_json(row).to_json()) == as_text(row)


# eval.json ------------------------------------------------------------------------------------------------------
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
    assert written["status"] == "passed" and written["dataset"]["num_evaluated"] == 2
    markdown = (tmp_path / "out" / "eval.md").read_text()
    assert markdown == document.to_markdown("eval_hist.png" if "histogram" in result.artifacts else None)
    assert "**Status: PASSED**" in markdown and f"`{data}`, 2 images, 2 evaluated" in markdown
    assert all(f"| {c.name} |" in markdown for c in document.checks)
    failed = replace(document, checks=(replace(document.checks[0], passed=False), *document.checks[1:]))
    assert failed.to_json()["status"] == "failed" and "**Status: FAILED**" in failed.to_markdown()
    assert f"| {document.checks[0].name} |" in failed.to_markdown() and "**FAIL** |" in failed.to_markdown()


# zoo.json -------------------------------------------------------------------------------------------------------
def _canned_row(cell: Any, config: Any, device: str, env: Any) -> dict[str, Any]:
    """What cell.run_cell returns, without a child: eager 10 ms, ONNX Runtime 4 ms, OpenVINO unsupported."""
    row = {"model": cell.model, "runtime": cell.runtime, "dtype": cell.dtype, "status": "passed", "reason": None,
           "exit_code": 0}
    if cell.runtime == "openvino":
        return row | {"status": "unsupported", "reason": "no | engine", "exit_code": 2, "wall_s": 0.5}
    return row | {"output_shape": [1, 1000], "cosine": 1.0, "max_abs_diff": 0.0, "worst_rel_l2": 0.0,
                  "top1_match": True, "weights": "random-init", "input_size": [3, 160, 160],
                  "export_route": "torchscript" if cell.runtime == "onnxruntime" else None,
                  "latency_ms": 10.0 if cell.runtime == "eager" else 4.0, "p50_ms": 9.0, "setup_s": 0.1,
                  "wall_s": 1.5}


def test_zoo_writes_its_typed_document_and_resumes_from_typed_rows(tmp_path, monkeypatch):
    import accelport.zoo.api

    monkeypatch.setattr(accelport.zoo.api, "run_cell", _canned_row)
    sweep = ["zoo", "--models", "test_resnet", "test_vit", "--runtimes", "eager,onnxruntime,openvino",
             "--no-progress", "--no-plot", "--out-dir", str(tmp_path)]
    assert main(sweep) == 0
    written = json.loads((tmp_path / "zoo.json").read_text())
    document = ZooDocument.from_json(written)
    assert as_text(document.to_json()) == as_text(written)
    assert (tmp_path / "zoo.md").read_text() == document.to_markdown()
    assert (tmp_path / "zoo.csv").read_text() == document.to_csv()
    assert [r.speedup_vs_eager for r in document.rows] == [1.0, 2.5, None, 1.0, 2.5, None]  # 10 ms / 4 ms
    assert [p.fastest.runtime if p.fastest else None for p in document.pick] == ["onnxruntime", "onnxruntime"]
    assert written["counts"] == {"passed": 4, "failed": 0, "unsupported": 2, "crashed": 0, "timed_out": 0}
    markdown = document.to_markdown()
    assert "| test_resnet | pass 1.00x | pass 2.50x | n/a |" in markdown
    assert "| test_vit | openvino/fp32 | unsupported | no \\| engine |" in markdown
    assert "| test_vit | onnxruntime | fp32 | 4.000 | 2.50x |" in markdown
    csv_lines = document.to_csv().splitlines()
    assert csv_lines[0] == ",".join(CSV_FIELDS) and csv_lines[2].startswith("test_resnet,onnxruntime,fp32,passed,,1.0,")

    monkeypatch.setattr(accelport.zoo.api, "run_cell", lambda *args: pytest.fail("a journaled cell ran again"))
    assert main([*sweep, "--resume"]) == 0  # every row from the journal, read back as typed rows
    resumed = json.loads((tmp_path / "zoo.json").read_text())
    assert as_text({**resumed, "created_utc": None}) == as_text({**written, "created_utc": None})


def test_saved_zoo_document_reads_back_byte_for_byte():
    text = (REPO / "docs" / "zoo_cpu.json").read_text()
    saved = json.loads(text)
    assert as_text(ZooDocument.from_json(saved).to_json()) == as_text(saved)
