"""summary.json as a typed document (``RunSummary``): the JSON written is the document's, in the schema's field
order, and the log and report.md are rendered from the typed values."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

import accelport
from accelport.atomic import json_safe
from accelport.proofs import StructuralProof

# summary.json's top-level fields in schema_version 2's order (README "summary.json"), for a run with
# --target-weights: the original report's fields, the shared header, then accelport's additions.
SCHEMA_ORDER = ["status", "pretrained_used", "local_weight_used", "weight_path", "output_shape", "max_abs_diff",
                "mean_abs_diff", "cosine_similarity", "top1_match", "top5_match", "match_within_1_percent",
                "latency_ms", "schema_version", "created_utc", "wall_time_s", "model", "target", "reference",
                "environment", "weight_sha256", "weights", "inputs", "criteria", "parity", "input_blind", "latency",
                "samples",
                "structural_proof", "target_weights"]


@pytest.fixture(scope="module")
def failing_run(tmp_path_factory, seeded_weights, noisy_fc2_weights, two_images):
    """A real fp32 run whose target holds 10 % noise in one fc2 weight: parity fails."""
    out = tmp_path_factory.mktemp("failing_run")
    result = accelport.run(weights=str(seeded_weights), target_weights=str(noisy_fc2_weights), device="cpu",
                           images=tuple(two_images[:1]), out_dir=str(out), warmup=0, iters=1)
    return result, out


def test_summary_json_is_the_typed_documents_json_in_the_schemas_order(failing_run, noisy_fc2_weights):
    result, out = failing_run
    text = (out / "summary.json").read_text()
    assert text == json.dumps(json_safe(result.document.to_json()), indent=2) + "\n"  # the typed document's JSON
    written = json.loads(text)
    assert result.summary == written  # exactly the file: lists, not tuples, None for non-finite numbers
    assert result.document.to_json() == written  # all finite here: the typed document's JSON is the file's too
    assert list(written) == SCHEMA_ORDER
    assert written["status"] == "failed" and written["schema_version"] == 2
    assert written["target_weights"]["path"] == str(noisy_fc2_weights)
    assert written["target_weights"]["flag"] == "--target-weights"


def test_report_and_log_are_rendered_from_the_typed_document_and_name_the_failed_check(failing_run):
    result, out = failing_run
    document = result.document
    assert not document.passed and document.status == "failed" and not result.passed
    assert (out / "report.md").read_text() == document.to_markdown()
    assert (out / "accuracy_compare.log").read_text() == document.to_log()
    report = document.to_markdown()
    assert "**Verdict: FAILED** (criteria `fp32`)" in report
    rel_l2_row = next(line for line in report.splitlines() if line.startswith("| max_sample_rel_l2 |"))
    assert rel_l2_row.endswith("| **FAIL** |")
    assert "FAIL  max_sample_rel_l2" in document.to_log() and "status: FAILED" in document.to_log()
    assert "target side only (--target-weights)" in report


def test_a_failed_structural_proof_fails_a_run_whose_own_parity_passes(failing_run):
    document = failing_run[0].document
    passing = replace(document, parity=replace(document.parity, checks=[
        replace(check, passed=True) for check in document.parity.checks]))
    assert passing.passed and passing.to_json()["status"] == "passed"
    broken = replace(passing, structural_proof=StructuralProof("failed", "the same target in strict fp32 fails"))
    assert not broken.passed and broken.to_json()["status"] == "failed"
    assert broken.to_json()["structural_proof"] == {"status": "failed",
                                                    "reason": "the same target in strict fp32 fails"}
    assert "structural proof (same target, strict fp32, fp32 criteria): FAILED" in broken.to_log()
    assert "**Verdict: FAILED**" in broken.to_markdown()


def test_layer_report_is_recorded_only_when_the_layer_comparison_was_asked_for(failing_run):
    document = failing_run[0].document
    assert "layer_report" not in document.to_json() and "Layer-by-layer" not in document.to_markdown()
    not_run = replace(document, layers_requested=True)  # e.g. a compile target: layers cannot run
    assert list(not_run.to_json())[-1] == "layer_report" and not_run.to_json()["layer_report"] is None
    assert "Layer-by-layer" not in not_run.to_markdown()
    linked = replace(document, layer_report="layers.md", layers_requested=True)
    assert linked.to_json()["layer_report"] == "layers.md"
    assert "## Layer-by-layer comparison\nSee [layers.md](layers.md)." in linked.to_markdown()
