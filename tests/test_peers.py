"""Peer rows (what a user writes by hand), the pick against the best of them, the CPU ISA, the compile path."""

from __future__ import annotations

import json
import statistics

import pytest
import torch

from accelport.bench import peers
from accelport.bench.peers import compare_with_peers, paired_ratio, peer_summary
from accelport.bench.report import peer_lines
from accelport.bench.rows import PeerComparison
from accelport.cli import main
from accelport.environment import parse_isa
from accelport.runners.compile import int8_float_remainder

FAST = ["--iters", "3", "--warmup", "1", "--max-time", "1", "--no-progress", "--no-plot"]
MODEL = ["--model", "test_convnext2", "--device", "cpu"]

# Recorded /proc/cpuinfo flags lines (trimmed to the vector/matrix flags and a few others around them).
EPYC_AVX2 = ("flags\t\t: fpu sse sse2 ssse3 fma cx16 sse4_1 sse4_2 avx f16c bmi1 avx2 smep bmi2 sha_ni "
             "xsaveopt vaes vpclmulqdq rdpid fsrm")
ICELAKE = "flags : sse4_2 avx f16c fma avx2 avx512f avx512dq avx512cd avx512bw avx512vl avx512_vnni avx512_vbmi2"
SAPPHIRE_RAPIDS = ("flags : avx2 fma avx_vnni avx512f avx512bw avx512_vnni avx512_bf16 avx512_fp16 amx_bf16 "
                   "amx_tile amx_int8")
EPYC_ZEN4 = ("flags\t\t: fpu sse sse2 fma avx2 avx512f avx512dq avx512ifma avx512cd avx512bw avx512vl avx512_bf16 "
             "avx512vbmi avx512_vbmi2 gfni vaes avx512_vnni avx512_bitalg avx512_vpopcntdq rdpid fsrm")


@pytest.fixture(scope="module")
def peer_bench(tmp_path_factory):
    """One small sweep with peers: eager and OpenVINO at fp32 batch 1, two rounds. The slower of the two
    ``torch.compile`` peers (default options) is left out to keep this short: its recipe is the same runner
    class as the freezing one, with other options."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("openvino")
    out = tmp_path_factory.mktemp("peers")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ACCELPORT_CACHE_DIR", str(out / "cache"))
        patch.delitem(peers.RECIPES, "torch.compile default")
        rc = main(["bench", *MODEL, "--runtimes", "eager,openvino", "--dtypes", "fp32", "--batch-sizes",
                   "1", "--rounds", "2", "--streams", "1", "--micro-batches", "0", "--out-dir", str(out), "--pick",
                   *FAST])
    return rc, out, json.loads((out / "bench.json").read_text())


def test_peer_rows_are_measured_parity_checked_and_never_picked(peer_bench):
    rc, out, document = peer_bench
    assert rc == 0
    rows = {r["label"]: r for r in document["rows"]}
    expected = {"peer: torch.compile freezing channels-last fp32", "peer: onnxruntime default fp32",
                "peer: openvino default fp32"}
    assert {label for label, r in rows.items() if r["kind"] == "peer"} == expected
    for label in expected:
        row = rows[label]
        assert row["status"] == "ok" and row["parity"]["precision"] == "fp32" and row["parity"]["passed"]
        assert len(row["round_p50_ms"]) == 2 and row["peer"] in label
    assert rows["eager fp32"]["kind"] == "baseline" and rows["eager fp32"]["peer"] == "timm eager"
    assert document["pick"][0]["fastest"] in {label for label, r in rows.items() if r["kind"] != "peer"}
    records = {c["label"]: c for c in document["configurations"]}
    assert records["peer: onnxruntime default fp32"]["session_options"] == "default"
    freezing = records["peer: torch.compile freezing channels-last fp32"]
    assert freezing["inductor_config"] == {"freezing": True}
    # the recipe really froze: Inductor packed test_convnext2's convolutions and linears for oneDNN
    [shape] = [e for e in freezing["setup_events"] if e["step"] == "shape"]
    assert shape["packed_weight_ops"] > 0


def test_the_pick_is_compared_with_the_best_peer_round_by_round(peer_bench):
    _, out, document = peer_bench
    [entry] = document["peer_comparison"]
    rows = {r["label"]: r for r in document["rows"]}
    candidates = [r for r in rows.values() if r["kind"] in ("peer", "baseline") and r["parity"]["passed"]]
    best = min(candidates, key=lambda r: r["latency"]["p50_ms"])
    pick = rows[document["pick"][0]["fastest"]]
    assert entry["best_peer"] == best["label"] and entry["pick"] == pick["label"]
    per_round = [a / b for a, b in zip(pick["round_p50_ms"], best["round_p50_ms"], strict=True)]
    assert entry["ratio_to_best_peer"] == pytest.approx(statistics.median(per_round))
    markdown = (out / "bench.md").read_text()
    assert "## accelport vs what you would write by hand" in markdown and f"| {best['label']} |" in markdown


def test_compile_path_says_what_the_compile_runner_does_before_and_after_compiling():
    from accelport.runners.compile import CompiledRunner

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten())
    fp32 = CompiledRunner(model, torch.device("cpu"), "fp32", True).describe()
    bf16 = CompiledRunner(model, torch.device("cpu"), "bf16", False).describe()
    int8 = CompiledRunner(model, torch.device("cpu"), "int8", True).describe()
    assert int8["compile_path"] == ("AOTInductor, freezing, channels-last, PT2E int8 (oneDNN qconv/qlinear, "
                                    "qlinear binary add: addend row-major), "
                                    f"float remainder in {int8_float_remainder()}")
    assert fp32["compile_path"].endswith("freezing, channels-last") and "bf16" not in fp32["compile_path"]
    # the cast, not autocast, on every CPU kind measured (AVX2, AVX-512 BF16, AMX): docs/benchmarks.md
    assert bf16["compile_path"] == "AOTInductor, freezing, contiguous, model cast to bf16"


@pytest.mark.parametrize(("flags", "remainder"), [(EPYC_AVX2, "fp32"), (ICELAKE, "fp32"), (EPYC_ZEN4, "bf16"),
                                                  (SAPPHIRE_RAPIDS, "bf16")])
def test_int8_float_work_runs_in_bf16_only_where_the_cpu_multiplies_bf16(flags, remainder):
    # measured at batch 32: 2x faster than an fp32 remainder on the AMX Xeon, 1.7x on the AVX-512 BF16 EPYC, same
    # cosine; on AVX2 (and Ice Lake's AVX-512 without BF16) bf16 would be emulated (docs/int8.md)
    assert int8_float_remainder(parse_isa(flags)) == remainder


def test_run_runtime_auto_reports_the_best_peer(peer_bench):
    out = peer_bench[1]
    rc = main(["run", *MODEL, "--runtime", "auto", "--out-dir", str(out), "--iters", "2", "--warmup", "0"])
    auto = json.loads((out / "summary.json").read_text())["target"]["auto"]
    entry = peer_bench[2]["peer_comparison"][0]
    assert rc == 0 and auto["best_peer"] == entry["best_peer"]
    assert auto["ratio_to_best_peer"] == pytest.approx(entry["ratio_to_best_peer"])
    assert "best hand-written peer" in auto["reason"]
    for name in ("report.md", "accuracy_compare.log"):  # the report handed on says the runtime was picked, how
        said = (out / name).read_text()
        assert f"picked by --runtime auto from {out / 'bench.json'}: fastest fp32 configuration" in said
        assert f"the best hand-written peer ({entry['best_peer']}" in said


def _row(label, kind, rounds, passed=True, dtype="bf16", batch=32):
    return {"label": label, "kind": kind, "dtype": dtype, "batch_size": batch, "status": "ok",
            "parity": {"passed": passed}, "latency": {"p50_ms": statistics.median(rounds)}, "round_p50_ms": rounds}


def test_ratio_to_best_peer_is_the_median_of_per_round_ratios():
    rows = [_row("openvino bf16", "accelport", [100.0, 120.0, 200.0]),
            _row("compile bf16", "accelport", [150.0, 150.0, 150.0]),
            _row("peer: torch.compile freezing", "peer", [200.0, 120.0, 100.0]),
            _row("peer: wrong but fast", "peer", [10.0, 10.0, 10.0], passed=False),  # fails parity: not a peer
            _row("peer: eager", "peer", [900.0, 900.0, 900.0]),
            _row("eager fp32", "baseline", [50.0, 50.0, 50.0], dtype="fp32")]  # another dtype: not compared
    [entry] = compare_with_peers(rows)
    assert entry["pick"] == "openvino bf16" and entry["best_peer"] == "peer: torch.compile freezing"
    assert entry["round_ratios"] == [0.5, 1.0, 2.0] and entry["ratio_to_best_peer"] == 1.0
    assert entry["at_least_as_fast"] is True


def test_the_baseline_counts_as_a_peer_and_a_faster_peer_is_said():
    pick = _row("openvino fp32", "accelport", [30.0, 30.0], dtype="fp32", batch=1)
    baseline = _row("eager fp32", "baseline", [40.0, 60.0], dtype="fp32", batch=1)
    [entry] = compare_with_peers([pick, baseline, _row("peer: onnxruntime default fp32", "peer", [70.0, 70.0],
                                                       dtype="fp32", batch=1)])
    assert entry["best_peer"] == "eager fp32" and entry["ratio_to_best_peer"] == pytest.approx((0.75 + 0.5) / 2)
    [entry] = compare_with_peers([pick, baseline, _row("peer: onnxruntime default fp32", "peer", [20.0, 25.0],
                                                       dtype="fp32", batch=1)])
    assert entry["pick"] == "openvino fp32" and entry["best_peer"] == "peer: onnxruntime default fp32"
    assert entry["ratio_to_best_peer"] == pytest.approx((1.5 + 1.2) / 2) and entry["at_least_as_fast"] is False
    assert paired_ratio({"latency": {"p50_ms": 3.0}}, {"latency": {"p50_ms": 4.0}}) == (0.75, [0.75])


@pytest.mark.parametrize("line, name, bf16, int8", [
    (EPYC_AVX2, "AVX2", False, False),
    (ICELAKE, "AVX-512 VNNI", False, True),
    (EPYC_ZEN4, "AVX-512 BF16", True, True),
    (SAPPHIRE_RAPIDS, "AMX-BF16/INT8", True, True),
    ("flags : sse sse2 avx", "below AVX2", False, False),
])
def test_isa_is_named_from_cpuinfo_flags(line, name, bf16, int8):
    isa = parse_isa(line)
    assert (isa["name"], isa["bf16_arithmetic"], isa["int8_dot"]) == (name, bf16, int8)
    assert ("AMX-BF16" in isa["extensions"]) == (name == "AMX-BF16/INT8")


def test_compiled_peers_are_unsupported_where_inductor_has_no_backend():
    """An NPU (here the meta device stands in) gets an 'unsupported' row saying why, not a lowering error."""
    from accelport.errors import RuntimeUnavailableError

    model = torch.nn.Linear(2, 2)
    for name in ("torch.compile default", "torch.compile freezing channels-last"):
        with pytest.raises(RuntimeUnavailableError, match="Inductor supports cpu"):
            peers.create_peer_runner(name, model, torch.device("meta"), "fp32", threads=None, cache_dir=None)
    eager = peers.create_peer_runner("timm eager", model, torch.device("meta"), "bf16", threads=None, cache_dir=None)
    assert eager.autocast  # the eager recipe needs no Inductor: built on any device


def test_rounds_that_disagree_are_said_in_the_report_and_the_auto_line():
    # the Zen 5 run 4 figures: the median says "peer faster" (1.042), but one round of three put the pick ahead
    level = PeerComparison("bf16", 32, "compile bf16", 69.4, "peer: torch.compile freezing", 70.5, 1.042,
                           [1.074, 1.042, 0.970], False)
    ahead = PeerComparison("fp32", 32, "openvino fp32", 112.3, "peer: torch.compile freezing", 153.7, 0.727,
                           [0.710, 0.759, 0.727], True)
    one_round = PeerComparison("fp32", 1, "compile fp32", 4.5, "peer: onnxruntime default", 5.0, 1.1, [1.1], False)
    lines = peer_lines([level, ahead, one_round], rounds=3)
    [level_row] = [line for line in lines if line.startswith("| bf16 | 32 ")]
    [ahead_row] = [line for line in lines if line.startswith("| fp32 | 32 ")]
    [one_row] = [line for line in lines if line.startswith("| fp32 | 1 ")]
    assert "**1.042** (peer faster; rounds disagree)" in level_row
    assert "**0.727** |" in ahead_row and "disagree" not in ahead_row
    assert "**1.100** (peer faster) |" in one_row  # one round cannot disagree with itself
    assert "level within this run's noise" in peer_summary(level.to_json())
    assert "noise" not in peer_summary(ahead.to_json())
