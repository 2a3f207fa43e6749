"""bench.json as a typed document (bench/document.py, bench/rows.py): ``accelport bench`` writes exactly its
``to_json``, ``from_json`` reads a written or an older saved document back exactly, bench.md is rendered from the
typed rows and picks."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from accelport.bench.api import run_bench
from accelport.bench.config import BenchConfig
from accelport.bench.document import BenchDocument
from accelport.bench.report import render_pick
from accelport.bench.rows import BatchPick, BenchRow, PeerComparison

SAVED_BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "results"
# bench.json's keys in order, as the untyped code (commit 38bc6a0) wrote them: the schema this module must keep
TOP_KEYS = ["schema_version", "created_utc", "wall_time_s", "model", "environment", "resumed_points",
            "timing_reliability", "device", "numeric_settings", "settings", "criteria", "baseline", "configurations",
            "rows", "peer_comparison", "pick"]
SETTINGS_KEYS = ["runtimes", "dtypes", "batch_sizes", "channels_last", "streams", "micro_batches", "warmup", "iters",
                 "max_time_s", "rounds", "threads", "fp32_math", "num_images", "cache_dir", "peers",
                 "calibration",  # added with int8 in bench (null without int8); calibration_overlap only with int8
                 "swept_threads"]  # added with the thread sweep: the counts besides "threads" ([] when none)
ROW_KEYS = ["label", "runtime", "dtype", "channels_last", "streams", "micro_batch", "kind", "peer", "batch_size",
            "status", "setup_s", "parity", "memory", "latency", "images_per_s", "round_p50_ms", "load", "reliability",
            "ratio_vs_eager", "speedup_vs_eager", "achieved_gflops_per_s"]
PICK_KEYS = ["batch_size", "fastest", "fastest_p50_ms", "fastest_ratio_vs_eager", "fastest_by_dtype", "table"]
TABLE_KEYS = ["label", "p50_ms", "images_per_s", "ratio_vs_eager", "parity", "status", "timing_reliable"]


def as_text(document: dict[str, Any]) -> str:
    """The JSON text of a document: equal texts mean equal keys, values and key order."""
    return json.dumps(document, allow_nan=True)


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
    assert document.to_json() == written  # in Python too: lists, not tuples (calibration was a tuple)
    assert as_text(BenchDocument.from_json(written).to_json()) == as_text(written)
    assert list(written) == TOP_KEYS and list(written["settings"]) == SETTINGS_KEYS
    assert all(list(row) == ROW_KEYS for row in written["rows"])
    assert list(written["pick"][0]) == PICK_KEYS and list(written["pick"][0]["table"][0]) == TABLE_KEYS
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
    few = replace(document, settings=replace(document.settings, iters=2)).to_markdown()  # every row timed 3
    assert "up to 3 timed iterations" in few and "; --iters 2 raised to that)" in few


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


def test_the_sweep_says_once_when_its_reference_barely_depends_on_the_images():
    from accelport.bench.report import input_blind_lines

    def row(dtype, parity, status="ok"):
        return BenchRow(f"eager {dtype}", "eager", dtype, False, 1, 0, 1, status, parity=parity)

    seeing = (row("fp32", {"passed": True}), row("bf16", {"passed": True}))
    assert input_blind_lines(seeing) == []
    blind = (row("fp32", {"passed": True, "input_blind": True}), row("bf16", {"passed": True, "input_blind": True}),
             row("fp16", {"input_blind": True}, status="error"))  # a point not measured says nothing
    lines = input_blind_lines(blind)
    assert len(lines) == 1 and lines[0].startswith("caution (bf16, fp32 criteria)")
    assert "cannot see a target that ignores it" in lines[0]


def test_bench_pick_says_where_the_timing_rounds_disagree_on_pick_against_peer():
    # a measured sweep (Zen 5, run 4): bf16 batch 32 is 1.042 at the median, but one of its 3 rounds put the pick ahead
    document = BenchDocument.from_json(json.loads(
        (SAVED_BENCH / "bench_default_cpu_epyc_avx512bf16_2core_frozen.json").read_text()))
    printed = {line.split(":")[0].strip(): line for line in render_pick(document).splitlines() if " / peer: " in line}
    assert printed["bf16 batch 32"].endswith("= 1.042 (the rounds disagree: level)")
    assert printed["fp32 batch 32"].endswith("= 0.727")
