"""`accelport bench`: the sweep, its artifacts, the pick, and `run --runtime auto`, in-process and CPU-only."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from accelport.bench.memory import PeakMemory
from accelport.bench.pick import fastest_passing, picks
from accelport.bench.sweep import BASELINE, Configuration, padded_indices, plan_configurations
from accelport.cli import main
from accelport.criteria import criteria_for
from accelport.preprocess import data_config_for
from accelport.runners import _REGISTRY
from accelport.runners.eager import EagerRunner

FAST = ["--iters", "3", "--warmup", "1", "--max-time", "1", "--no-progress", "--no-peers"]
MODEL = ["--model", "test_convnext2", "--device", "cpu"]


class WrongButFastRunner(EagerRunner):
    """Eager with every logit shuffled: what a broken port looks like. Registered as a runtime by one test."""

    name = "wrong"

    def _to_host_impl(self, device_output):
        output = super()._to_host_impl(device_output)
        return output[:, torch.randperm(output.shape[1], generator=torch.Generator().manual_seed(0))]


def _needs_engines() -> None:
    """Only the sweeps need ONNX Runtime and OpenVINO; the planning and pick tests run without them."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("openvino")


pytestmark = pytest.mark.usefixtures("private_cache")


@pytest.fixture(scope="module")
def bench_dir(tmp_path_factory):
    """One sweep of the runtimes that need no compiler, fp32 and bf16, batch sizes 1 and 2."""
    _needs_engines()
    out = tmp_path_factory.mktemp("bench")
    rc = main(["bench", *MODEL, "--runtimes", "eager,onnxruntime,openvino", "--dtypes", "fp32,bf16",
               "--batch-sizes", "1,2", "--out-dir", str(out), "--cache-dir", str(out / "cache"), "--pick", *FAST])
    return rc, out


def test_bench_writes_json_markdown_and_plot(bench_dir):
    rc, out = bench_dir
    assert rc == 0
    document = json.loads((out / "bench.json").read_text())
    assert document["schema_version"] == 1
    assert document["environment"]["cpu"] and document["environment"]["threads"] >= 1
    assert (out / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    markdown = (out / "bench.md").read_text()
    assert "| configuration | batch |" in markdown and "## Pick" in markdown
    assert document["environment"]["cpu"] in markdown
    ident = document["environment"]["cpu_id"]
    if ident["family"] is not None:  # Linux: the CPU kind behind the model name, named in the report
        assert f"family {ident['family']} model {ident['model']}" in markdown
    assert f"allocator: {document['environment']['allocator']['settings']}" in markdown  # it moves eager's times


def test_bench_measures_every_configuration_at_every_batch_size_with_its_parity(bench_dir):
    document = json.loads((bench_dir[1] / "bench.json").read_text())
    points = {(r["label"], r["batch_size"]): r for r in document["rows"]}
    for runtime in ("eager", "onnxruntime", "openvino"):
        for dtype in ("fp32", "bf16"):
            for batch_size in (1, 2):
                assert (f"{runtime} {dtype}", batch_size) in points
    for row in document["rows"]:
        if row["status"] == "ok":
            assert row["parity"]["precision"] == row["dtype"] and row["parity"]["samples"] >= 6
            assert row["latency"]["p50_ms"] > 0 and row["latency"]["iters"] >= 3 and row["setup_s"] >= 0
            assert row["memory"]["peak_mb"] >= row["memory"]["rss_before_mb"] > 0
            assert row["latency"]["p50_ms"] <= row["latency"]["p90_ms"] <= row["latency"]["p99_ms"]
    assert points["onnxruntime bf16", 1]["status"] == "unsupported"
    assert "--dtype bf16" in points["onnxruntime bf16", 1]["reason"]
    assert points["eager bf16", 1]["parity"]["passed"]  # a correct bf16 run passes the bf16 defaults
    # --no-peers: no hand-written recipe is timed, and bench.md says so instead of comparing
    assert not [r for r in document["rows"] if r.get("kind") == "peer"] and document["peer_comparison"] == []
    assert "No peer rows (`--no-peers`)" in (bench_dir[1] / "bench.md").read_text()


def test_openvino_is_also_measured_with_the_batch_split_over_two_streams(bench_dir):
    document = json.loads((bench_dir[1] / "bench.json").read_text())
    points = {(r["label"], r["batch_size"]): r for r in document["rows"]}
    assert "eager fp32 2 streams" not in {label for label, _ in points}  # only OpenVINO has streams
    for label in ("openvino fp32 2 streams", "openvino fp32 micro-batch 4", "openvino fp32 2 streams micro-batch 4"):
        assert points[label, 1]["status"] == "skipped" and "nothing to split" in points[label, 1]["reason"]
    assert points["openvino fp32 micro-batch 4", 2]["status"] == "skipped"  # 2 images: still one request
    split = points["openvino fp32 2 streams", 2]
    if document["settings"]["threads"] >= 2:
        assert split["status"] == "ok" and split["streams"] == 2 and split["parity"]["passed"]
        record = next(c for c in document["configurations"] if c["label"] == "openvino fp32 2 streams")
        assert record["num_streams"] == 2 and record["inference_num_threads"] == document["settings"]["threads"]
    else:  # one thread cannot feed two streams: said, not silently run on one
        assert split["status"] == "unsupported" and "--streams 2" in split["reason"]


def test_throughput_in_flops_uses_the_counted_model_flops(bench_dir):
    document = json.loads((bench_dir[1] / "bench.json").read_text())
    flops = document["model"]["flops_per_image"]
    assert flops > 0
    for row in document["rows"]:
        if row["status"] == "ok":
            expected = flops * row["batch_size"] / (row["latency"]["p50_ms"] / 1000) / 1e9
            assert row["achieved_gflops_per_s"] == pytest.approx(expected)


def test_ratios_are_against_the_same_runs_eager_fp32_baseline(bench_dir):
    rows = json.loads((bench_dir[1] / "bench.json").read_text())["rows"]
    for batch_size in (1, 2):
        base = next(r for r in rows if r["label"] == "eager fp32" and r["batch_size"] == batch_size)
        assert base["ratio_vs_eager"] == 1.0
        for row in rows:
            if row["status"] == "ok" and row["batch_size"] == batch_size:
                assert row["ratio_vs_eager"] == pytest.approx(row["latency"]["p50_ms"] / base["latency"]["p50_ms"])


def test_pick_is_printed_with_its_table(bench_dir, capsys):
    document = json.loads((bench_dir[1] / "bench.json").read_text())
    for pick in document["pick"]:
        best = min((r for r in document["rows"] if r["batch_size"] == pick["batch_size"] and r["status"] == "ok"
                    and r["parity"]["passed"]), key=lambda r: r["latency"]["p50_ms"])
        assert pick["fastest"] == best["label"]
        assert {entry["label"] for entry in pick["table"]} >= {"eager fp32", "onnxruntime fp32", "openvino fp32"}


def test_run_runtime_auto_takes_the_benchs_pick_for_its_dtype_and_batch_size(bench_dir):
    out = bench_dir[1]
    document = json.loads((out / "bench.json").read_text())
    expected = fastest_passing(document["rows"], 1, "fp32")
    rc = main(["run", *MODEL, "--runtime", "auto", "--out-dir", str(out), "--iters", "2", "--warmup", "0"])
    summary = json.loads((out / "summary.json").read_text())
    assert rc == 0
    assert summary["target"]["runtime"] == expected["runtime"]
    assert summary["target"]["auto"]["source"].endswith("bench.json")
    assert summary["target"]["setup_s"] >= 0 and summary["target"]["setup_events"]


def test_a_fast_but_wrong_runtime_fails_parity_and_is_never_picked(monkeypatch, tmp_path):
    monkeypatch.setitem(_REGISTRY, "wrong", (__name__, "WrongButFastRunner", None))
    rc = main(["bench", *MODEL, "--runtimes", "wrong", "--dtypes", "fp32", "--batch-sizes", "1",
               "--out-dir", str(tmp_path), "--no-plot", *FAST])
    document = json.loads((tmp_path / "bench.json").read_text())
    wrong = next(r for r in document["rows"] if r["runtime"] == "wrong")
    assert rc == 0 and not wrong["parity"]["passed"]
    assert document["pick"][0]["fastest"] == BASELINE.label


def test_the_eager_fp32_baseline_is_always_planned_first():
    planned = plan_configurations(("onnxruntime", "compile"), ("bf16",), "auto")
    assert planned[0] == BASELINE
    assert Configuration("compile", "bf16", True) in planned  # channels-last is compile's fast path
    assert Configuration("onnxruntime", "bf16", False) in planned
    assert all(not c.channels_last for c in plan_configurations(("eager", "onnxruntime"), ("fp32",), "on")
               if c.runtime == "onnxruntime")


def test_streams_are_planned_for_openvino_only():
    labels = [c.label for c in plan_configurations(("eager", "onnxruntime", "openvino"), ("fp32",), "auto", (1, 2))]
    assert labels == ["eager fp32", "onnxruntime fp32", "openvino fp32", "openvino fp32 2 streams"]
    labels = [c.label for c in plan_configurations(("openvino",), ("fp32",), "auto", (2,), (0, 4))]
    assert labels == ["eager fp32", "openvino fp32 2 streams", "openvino fp32 2 streams micro-batch 4"]


def test_auto_takes_the_stream_count_of_the_pick():
    from accelport.bench.pick import _choose
    from accelport.job import Target

    rows = [{"label": label, "runtime": runtime, "dtype": "fp32", "channels_last": False, "streams": streams,
             "batch_size": 8, "status": "ok", "latency": {"p50_ms": p50}, "images_per_s": 8000 / p50,
             "parity": {"passed": True}}
            for label, runtime, streams, p50 in (("eager fp32", "eager", 1, 200.0),
                                                 ("openvino fp32", "openvino", 1, 100.0),
                                                 ("openvino fp32 2 streams", "openvino", 2, 90.0))]
    rows[2]["micro_batch"] = 2
    choice = _choose({"rows": rows}, Target(batch_size=8), "bench.json")
    assert (choice.runtime, choice.streams, choice.micro_batch) == ("openvino", 2, 2)
    assert "UNRELIABLE" not in choice.reason
    rows[2]["reliability"] = {"reliable": False}  # said only in summary.json's table before: the log read as sure
    assert "its timing was flagged UNRELIABLE there" in _choose({"rows": rows}, Target(batch_size=8), "b.json").reason
    rows[2]["parity"]["passed"] = False
    assert _choose({"rows": rows}, Target(batch_size=8), "bench.json").streams == 1


def test_pick_skips_failing_and_unsupported_rows_and_says_when_none_passes():
    def row(label, p50, passed, status="ok"):
        runtime, dtype = label.split()
        return {"label": label, "runtime": runtime, "dtype": dtype, "batch_size": 1, "status": status,
                "latency": {"p50_ms": p50}, "images_per_s": 1000 / p50, "parity": {"passed": passed}}

    rows = [row("eager fp32", 30.0, True), row("compile fp32", 5.0, False), row("onnxruntime fp32", 12.0, True),
            row("openvino bf16", 1.0, True, status="unsupported")]
    assert fastest_passing(rows, 1)["label"] == "onnxruntime fp32"
    assert fastest_passing(rows, 1, "bf16") is None
    assert picks([r for r in rows if not r["parity"]["passed"]], (1,))[0]["fastest"] is None


def test_padding_covers_every_image_in_whole_batches():
    index = padded_indices(6, 4)
    assert len(index) == 8 and set(index) == set(range(6))
    assert len(padded_indices(6, 32)) == 32 and len(padded_indices(6, 1)) == 6


def test_peak_memory_is_per_configuration_not_per_process():
    import gc

    memory = PeakMemory(torch.device("cpu"))
    gc.collect()  # else earlier tests' garbage, freed while the ballast is allocated, hides part of it (CI: 57.8 MiB)
    memory.start()
    ballast = np.ones(64 * 2**20 // 8)  # 64 MiB, touched
    first = memory.stop()
    del ballast
    memory.start()
    second = memory.stop()
    assert first["resettable"] and first["peak_mb"] - first["rss_before_mb"] >= 56  # 7/8 of it: RSS is noisy
    assert second["peak_mb"] < first["peak_mb"]  # the reset forgot the first configuration's peak


def test_bad_bench_flags_are_user_errors(tmp_path, capsys):
    assert main(["bench", "--runtimes", "tensorrt", "--out-dir", str(tmp_path)]) == 2
    assert "--runtimes 'tensorrt'" in capsys.readouterr().err
    assert main(["bench", "--batch-sizes", "1,x", "--out-dir", str(tmp_path)]) == 2
    assert main(["bench", "--threads", "2,0", "--out-dir", str(tmp_path)]) == 2
    assert "--threads 0: must be at least 1" in capsys.readouterr().err  # the bad count of the list
    assert main(["run", "--threads", "0", "--out-dir", str(tmp_path)]) == 2
    assert "--threads 0: must be at least 1" in capsys.readouterr().err


def test_run_records_the_openvino_split_it_used(tmp_path):
    _needs_engines()
    rc = main(["run", *MODEL, "--runtime", "openvino", "--streams", "2", "--micro-batch", "1", "--batch-size", "2",
               "--out-dir", str(tmp_path), "--iters", "2", "--warmup", "0"])
    target = json.loads((tmp_path / "summary.json").read_text())["target"]
    assert rc == 0
    assert (target["streams"], target["micro_batch"], target["num_streams"]) == (2, 1, 2)
    assert target["part_batch_sizes"] == [1]  # every request holds one image
    assert "streams 2, micro-batch 1" in (tmp_path / "report.md").read_text()


class _CountingRunner:
    """Counts forward calls; each takes no time, so how many a round makes depends only on the round's sizing."""

    def __init__(self) -> None:
        self.calls = 0

    def to_device(self, batch):
        return batch

    def synchronize(self) -> None:
        pass

    def forward(self, batch):
        self.calls += 1
        return batch


@pytest.mark.parametrize("known_call_ms, calls", [(5000.0, 1), (20.0, 7)])
def test_a_later_round_without_warm_up_keeps_to_its_time_budget(known_call_ms, calls):
    """A later round of a slow point skips warm-up; the call time its first round measured sizes it (before: the
    full iteration count, 7 calls of 5 s where the budget allows 3.3 s)."""
    from types import SimpleNamespace

    from accelport.bench.points import Point

    settings = SimpleNamespace(rounds=3, iters=20, max_time_s=10.0)
    runner = _CountingRunner()
    point = Point({"label": "slow", "batch_size": 32}, runner, torch.zeros(1), round_p50_ms=[known_call_ms])
    point.time_round(settings, warmup=0, journal=None)
    assert runner.calls == calls  # ceil(20/3) = 7 iterations per round at most; 3.3 s / 5 s -> the minimum, 1
    assert len(point.round_p50_ms) == 2


def test_target_weights_bench_the_port_against_the_reference(tmp_path, seeded_weights, noisy_fc2_weights):
    """A converted checkpoint with a fault: every row runs the port and fails parity against the reference (eager
    included), so no configuration is picked (exit 1); the port's weights are recorded."""
    rc = main(["bench", "--model", "convnextv2_atto", "--device", "cpu", "--weights", str(seeded_weights),
               "--target-weights", str(noisy_fc2_weights), "--runtimes", "eager", "--dtypes", "fp32",
               "--batch-sizes", "1", "--rounds", "1", "--out-dir", str(tmp_path), "--no-plot", *FAST])
    document = json.loads((tmp_path / "bench.json").read_text())
    assert rc == 1 and document["pick"][0]["fastest"] is None
    assert document["rows"] and not any(row["parity"]["passed"] for row in document["rows"])
    port = document["model"]["target_weights"]
    assert port["path"] == str(noisy_fc2_weights) and port["sha256"] != document["model"]["weights_sha256"]
    assert port["differing_tensors"] == ["stages.2.blocks.1.mlp.fc2.weight"]  # named, as run names them
    assert "differs from --weights in 1 tensor(s): stages.2.blocks.1.mlp.fc2.weight" in (
        tmp_path / "bench.md").read_text()


def test_auto_never_hands_on_more_threads_than_this_process_may_use(bench_dir, monkeypatch):
    """The same machine under taskset: the pick's measured thread count is cut to the CPUs allowed now."""
    import accelport.environment
    from accelport.bench.pick import _choose
    from accelport.job import Target

    document = json.loads((bench_dir[1] / "bench.json").read_text())
    target = Target(runtime="auto", dtype="fp32", batch_size=1)
    for row in document["rows"]:
        row["threads"] = 64
    monkeypatch.setattr(accelport.environment, "usable_cpus", lambda: {0, 1, 2})
    assert _choose(document, target, "bench.json").threads == 3
    for row in document["rows"]:
        row["threads"] = 2
    assert _choose(document, target, "bench.json").threads == 2


@pytest.mark.parametrize("change", [None, "cpu", "cpu_count", "cpu_isa", "cpu_id", "no_cpu_id", "mangled_cpu_id"])
def test_auto_uses_a_bench_json_only_from_this_machine(change, bench_dir):
    """A bench.json copied from another machine (its thread count and winner belong there) is not a pick here,
    including another CPU kind behind the same model name ("AMD EPYC" for a Zen 4 and a Zen 5 alike)."""
    from accelport.bench.pick import machine_identity
    from accelport.environment import describe_environment

    environment = json.loads((bench_dir[1] / "bench.json").read_text())["environment"]
    if change == "cpu":
        environment["cpu"] = "Some Other CPU @ 3.0GHz"
    elif change == "cpu_count":
        environment["cpu_count"] += 14
    elif change == "cpu_isa":
        environment["cpu_isa"] = {**environment["cpu_isa"], "name": "SOME-OTHER-ISA"}
    elif change == "cpu_id":
        environment["cpu_id"] = {**environment["cpu_id"], "model": (environment["cpu_id"]["model"] or 0) + 1}
    elif change == "no_cpu_id":  # written before the identity was recorded: which CPU kind is unknown
        del environment["cpu_id"]
    elif change == "mangled_cpu_id":  # a hand-edited file: unknown too, and no crash
        environment["cpu_id"] = "x"
    here = machine_identity(describe_environment(torch.device("cpu")))
    assert (machine_identity(environment) == here) is (change is None)


@pytest.mark.parametrize("environment_change, said", [
    ({"cpu_id": None}, "a CPU whose family and model it does not record (an older accelport wrote it; this one is "),
    ({"cpu_id": {"family": 99, "model": 1, "vendor": "AuthenticAMD"}},
     "(AMD family 99 model 1): CPU vendor/family/model/stepping ('AuthenticAMD', 99, 1, None) there, ("),
    ({"cpu_count": 64}, ": CPU count 64 there, "),  # the same CPU kind with more vCPUs: say what differs
    ({"cpu_isa": "x"}, "another machine"),  # a hand-edited block of the wrong kind: no exit 3
    ({"cpu_id": {"family": 26}}, "another machine"),
    # measured with glibc's defaults, or before the allocator was recorded: eager's page faults are in its numbers
    ({"allocator": {"settings": "glibc malloc, defaults (dynamic mmap threshold, trimming on)", "retain": False}},
     "another allocator ('glibc defaults' there, 'glibc, freed memory kept' here"),
    ({"allocator": None}, "another allocator ('not recorded' there, "),
    # timed at another input size (bench --test-size, then a plain run): its latencies are of other inputs
    ({"model": {"input_size": [3, 40, 40]}}, "other inputs (input_size [3, 40, 40] there, [3, 160, 160] here"),
    # a hand-edited runtime: said as the file's, not blamed on a --runtime the user never gave
    ({"rows": {"runtime": "tensorrt", "label": "tensorrt fp32"}}, "runtime(s) this version does not run ('tensorrt')"),
    ({"model": {"data_config": None}}, "no input size it was timed at"),  # any size would have been taken
    ({"allocator": {"settings": "glibc malloc, mmap and trimming off: freed memory kept for reuse (set by accelport)",
                    "retain": "true"}}, "another allocator ('not recorded' there, "),  # hand-edited: not trusted
    # judged otherwise: a pick that passed looser criteria or fp32 math was reused for a strict run
    ({"settings": {"fp32_math": "fast"}}, "--fp32-math 'fast' (here 'strict')"),
    ({"criteria": {"min_cosine": 0.0}}, "other fp32 criteria"),
    # a hand-edited thread count: -3 was handed to the runtime and recorded, "4" stopped the run (exit 3)
    ({"settings": {"threads": -3}}, "settings.threads -3 (not a thread count"),
    ({"settings": {"threads": "4"}}, "settings.threads '4' (not a thread count"),
    ({"criteria": "loose"}, "an environment this version cannot read (AttributeError"),  # not an exit 3
])
def test_auto_says_why_a_bench_json_from_the_out_dir_is_not_used(bench_dir, tmp_path, caplog, environment_change,
                                                                  said):
    """An older bench.json (no cpu_id) from this very machine was "measured for another machine (AMD EPYC)", the
    name of this one too; a mangled cpu_id or cpu_isa stopped run --runtime auto with an internal error."""
    import logging
    from types import SimpleNamespace

    from accelport.bench.pick import _cached_choice
    from accelport.job import Target
    from accelport.models import load_model

    document = json.loads((bench_dir[1] / "bench.json").read_text())
    if "model" in environment_change and "data_config" in environment_change["model"]:
        document["model"].update(environment_change["model"])
    elif "model" in environment_change:
        document["model"]["data_config"].update(environment_change["model"])
    elif "rows" in environment_change:
        document["rows"][0].update(environment_change["rows"])
    elif "settings" in environment_change:
        document["settings"].update(environment_change["settings"])
    elif environment_change.get("criteria") == "loose":
        document["criteria"] = "loose"
    elif "criteria" in environment_change:
        document["criteria"]["fp32"].update(environment_change["criteria"])
    else:
        document["environment"].update(environment_change)
    (tmp_path / "bench.json").write_text(json.dumps(document))
    loaded = load_model("test_convnext2")
    job = SimpleNamespace(spec=SimpleNamespace(out_dir=str(tmp_path), fp32_math="strict"), loaded=loaded,
                          device=torch.device("cpu"), separate_target=False,
                          data_config=data_config_for(loaded.model, False), criteria_for=lambda d: criteria_for(d, {}))
    with caplog.at_level(logging.INFO, logger="accelport"):
        assert _cached_choice(job, Target(runtime="auto", dtype="fp32", batch_size=1)) is None
    assert f"{tmp_path / 'bench.json'} was measured for " in caplog.text and said in caplog.text


@pytest.mark.parametrize("case", ["benched_a_port", "run_on_a_port", "nothing_passed", "dtype_not_measured"])
def test_auto_takes_a_matching_bench_json_only_for_the_same_port_and_says_what_it_found(bench_dir, tmp_path, caplog,
                                                                                         case):
    """A bench.json made with --target-weights was reused for a run with other or no target weights (its rows passed
    parity on those weights); one in which nothing passed read "no matching bench.json" and swept again."""
    import logging
    from types import SimpleNamespace

    from accelport.bench.pick import _cached_choice
    from accelport.job import Target
    from accelport.models import load_model
    from accelport.runners.cache import weights_digest

    document = json.loads((bench_dir[1] / "bench.json").read_text())
    loaded = load_model("test_convnext2")
    port = load_model("test_convnext2")
    with torch.no_grad():
        next(port.model.parameters()).add_(0.5)
    job = SimpleNamespace(spec=SimpleNamespace(out_dir=str(tmp_path), fp32_math="strict"), loaded=loaded,
                          device=torch.device("cpu"), separate_target=case == "run_on_a_port",
                          data_config=data_config_for(loaded.model, False), criteria_for=lambda d: criteria_for(d, {}),
                          target_model=SimpleNamespace(model=port.model, weights=SimpleNamespace(path="port.pt")))
    if case == "benched_a_port":
        document["model"]["target_weights"] = {"path": "old_port.pt", "state_digest": weights_digest(port.model)}
    if case == "nothing_passed":
        for row in document["rows"]:
            if row["status"] == "ok":
                row["parity"]["passed"] = False
    (tmp_path / "bench.json").write_text(json.dumps(document))
    dtype = "int8" if case == "dtype_not_measured" else "fp32"
    with caplog.at_level(logging.INFO, logger="accelport"):
        choice = _cached_choice(job, Target(runtime="auto", dtype=dtype, batch_size=1))
    source = tmp_path / "bench.json"
    if case == "nothing_passed":  # measuring again would time the same configurations against the same criteria
        assert (choice.runtime, choice.source) == ("eager", str(source)) and choice.table
        assert f"no fp32 configuration passed parity at batch 1 in {source}; using eager" in caplog.text
        return
    assert choice is None
    said = {"benched_a_port": "other --target-weights (old_port.pt there, none here)",
            "run_on_a_port": "other --target-weights (none there, port.pt here)",
            "dtype_not_measured": "was measured for this job but not in int8 at batch 1"}[case]
    assert str(source) in caplog.text and said in caplog.text


@pytest.mark.parametrize("damage, said", [
    (None, "(JSONDecodeError"),  # cut short
    # hand-edited rows: the pick read them raw (KeyError 'parity': exit 3) or took a negative time as the fastest
    ({"parity": None}, "(ValueError: row 'eager fp32': parity None (a measured row's verdict"),
    ({"latency": {"p50_ms": -5}}, "(ValueError: row 'eager fp32': latency.p50_ms -5 (a positive, finite time)"),
    ({"latency": {"p50_ms": float("nan")}}, "latency.p50_ms nan (a positive, finite time)"),
    ({"batch_size": "1"}, "batch_size '1' (a positive integer)"),
    ({"channels_last": "yes"}, "channels_last 'yes' (true or false)"),  # was blamed on the API's own flag
    ({"streams": 0}, "streams 0 (an integer >= 1)"),
    ({"status": "OK"}, "status 'OK' (one of ok, unsupported, error, skipped)"),  # dropped from the pick unsaid
    ({"dtype": "float32"}, "dtype 'float32' (one of fp32, fp16, bf16, int8)"),
    ({"parity": {"passed": True, "failed_checks": ["min_sample_cosine"]}}, "a verdict that agrees with itself"),
    ({"reliability": "no"}, "reliability 'no' (an object)"),  # read as an object by the pick: exit 3
    # logged as the label, run as the runtime: a compile row labelled "eager fp32" was said to be eager
    ({"runtime": "compile"}, "label 'eager fp32' (an accelport row's label starts with its runtime and dtype"),
])
def test_auto_says_when_a_bench_json_in_the_out_dir_cannot_be_read(bench_dir, tmp_path, caplog, damage, said):
    """A truncated bench.json (a copy cut short) was skipped without a word, and a full sweep ran instead."""
    from types import SimpleNamespace

    from accelport.bench.pick import _cached_choice
    from accelport.job import Target

    if damage is None:
        (tmp_path / "bench.json").write_text('{"schema_version": 3, "rows": [')
    else:
        document = json.loads((bench_dir[1] / "bench.json").read_text())
        document["rows"][0].update(damage)  # eager fp32 at batch 1, the baseline: measured
        (tmp_path / "bench.json").write_text(json.dumps(document))
    job = SimpleNamespace(spec=SimpleNamespace(out_dir=str(tmp_path)),
                          loaded=SimpleNamespace(model=torch.nn.Linear(2, 2)), separate_target=False)
    assert _cached_choice(job, Target(runtime="auto")) is None
    assert f"{tmp_path / 'bench.json'} is not a bench document this version reads (" in caplog.text
    assert said in caplog.text


def test_a_wrong_later_request_is_caught_on_repeated_images_and_named_by_their_image():
    """With 3 images at batch 2 the second batch holds image 2 and a repeat of image 0; a target wrong only on the
    repeat (a later request of a split batch) must fail, and the detail must name a real image (it said "image 3"
    of 3 images)."""
    from accelport.bench.points import check_parity, padded_names
    from accelport.criteria import criteria_for

    # the structural proof's rows are named the same way
    assert padded_names(3, 2) == ["image 0", "image 1", "image 2", "image 0 (repeated at position 3)"]
    images = torch.arange(3, dtype=torch.float32).repeat_interleave(4).reshape(3, 4) + 1.0
    reference = images.numpy().astype(np.float64)

    class SecondBatchWrong:
        calls = 0

        def infer(self, batch):
            self.calls += 1
            return batch if self.calls == 1 else torch.stack([batch[0], -batch[1]])

    parity = check_parity(SecondBatchWrong(), images, reference, 2, criteria_for("fp32"), False)
    assert not parity["passed"] and parity["samples"] == 4
    details = " ".join(str(c.get("detail") or "") for c in parity["checks"] if not c["passed"])
    assert "image 0 (repeated at position 3)" in details and "image 3" not in details


def test_bench_parity_counts_a_flipped_image_once_across_its_padded_repeats():
    """3 images cycled to fill batch 8: image 0 sits at positions 0, 3 and 6. A target that flips only image 0's
    class is one mismatching image, so max_top1_mismatches=1 passes it, as it does at batch 1."""
    from types import SimpleNamespace

    from accelport.bench.points import check_parity
    from accelport.criteria import criteria_for

    images = torch.arange(3, dtype=torch.float32)[:, None].repeat(1, 4)  # image i holds the value i
    reference = np.eye(3, 6, dtype=np.float32) * 10

    def infer(batch: torch.Tensor) -> torch.Tensor:
        out = torch.from_numpy(reference[batch[:, 0].long().numpy()]).clone()
        out[batch[:, 0] == 0] = torch.eye(6)[5] * 10  # image 0 says class 5 wherever it is
        return out

    runner = SimpleNamespace(infer=infer)
    criteria = criteria_for("fp32", {"max_top1_mismatches": "1"})
    for batch_size in (1, 8):
        parity = check_parity(runner, images, reference, batch_size, criteria, True)
        check = next(c for c in parity["checks"] if c["name"] == "real_top1_mismatches")
        assert check["value"] == 1 and "real_top1_mismatches" not in parity["failed_checks"], (batch_size, check)


@pytest.mark.parametrize("port, proved", [("seeded", True), ("noisy", False)])
def test_a_port_benched_in_bf16_proves_each_peer_with_its_own_recipe_in_fp32(tmp_path, monkeypatch, seeded_weights,
                                                                           noisy_fc2_weights, port, proved):
    """With --target-weights, bf16 rows get the structural proof; a peer's was built with accelport's runtimes, so
    the torch recipes ("--runtime 'torch'") became error rows and OpenVINO's default was proved by accelport's own."""
    import accelport.bench.peers as peers
    import accelport.bench.sweep as sweep

    recipes = {"timm eager": peers.RECIPES["timm eager"]}  # the cheapest peer: the others compile for minutes
    monkeypatch.setattr(peers, "RECIPES", recipes)
    monkeypatch.setattr(sweep, "RECIPES", recipes)
    built = []
    real = peers.create_peer_runner
    monkeypatch.setattr(sweep, "create_peer_runner", lambda name, *a, **k: built.append((name, a[2])) or real(
        name, *a, **k))
    target = seeded_weights if port == "seeded" else noisy_fc2_weights
    main(["bench", "--model", "convnextv2_atto", "--device", "cpu", "--weights", str(seeded_weights),
          "--target-weights", str(target), "--runtimes", "eager", "--dtypes", "bf16", "--batch-sizes", "1",
          "--rounds", "1", "--out-dir", str(tmp_path), "--no-plot", *(f for f in FAST if f != "--no-peers")])
    document = json.loads((tmp_path / "bench.json").read_text())
    rows = {row["label"]: row for row in document["rows"]}
    assert (document["model"]["target_weights"]["differing_tensors"] == []) is proved
    peer = rows["peer: timm eager autocast bf16"]
    assert peer["status"] == "ok" and peer["parity"]["structural_proof"]["passed"] is proved
    assert built == [("timm eager", "bf16"), ("timm eager", "fp32")]  # the proof runs the peer's own recipe
