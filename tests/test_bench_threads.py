"""bench's thread counts: which it tries on the machine in hand, how they are planned, swept, picked and run."""

from __future__ import annotations

import json

import pytest

from accelport.bench.pick import _choose, fastest_passing
from accelport.bench.sweep import plan_configurations
from accelport.bench.threads import physical_cores, thread_candidates
from accelport.cli import main
from accelport.job import Target

FAST = ["--iters", "3", "--warmup", "1", "--max-time", "1", "--no-progress", "--no-peers"]
MODEL = ["--model", "test_convnext2", "--device", "cpu"]

pytestmark = pytest.mark.usefixtures("private_cache")


def test_auto_takes_the_thread_count_of_the_pick_unless_the_user_gave_one(monkeypatch):
    import accelport.environment

    monkeypatch.setattr(accelport.environment, "usable_cpus", lambda: set(range(8)))  # 4 threads fit on any CI box
    rows = [{"label": label, "runtime": "onnxruntime", "dtype": "fp32", "channels_last": False, "streams": 1,
             "batch_size": 1, "status": "ok", "latency": {"p50_ms": p50}, "images_per_s": 1000 / p50,
             "parity": {"passed": True}, **threads}
            for label, p50, threads in (("onnxruntime fp32", 10.0, {}), ("onnxruntime fp32 1 thread", 9.0,
                                                                         {"threads": 1}))]
    document = {"rows": rows, "settings": {"threads": 4}}
    choice = _choose(document, Target(), "bench.json")
    assert choice.threads == 1 and choice.applied_to(Target(runtime="auto")).threads == 1
    assert choice.applied_to(Target(runtime="auto", threads=3)).threads == 3  # --threads given: it wins
    rows[1]["parity"]["passed"] = False
    assert _choose(document, Target(), "bench.json").threads == 4  # the common count the row was measured with


def test_thread_candidates_follow_the_machine():
    assert thread_candidates(default=2, logical=2, physical=2, user_set=False) == (2,)  # a 2-vCPU VM: one count
    assert thread_candidates(default=4, logical=8, physical=4, user_set=False) == (4, 8)  # SMT: logical CPUs too
    assert thread_candidates(default=16, logical=32, physical=16, user_set=False) == (16, 32, 8)
    assert thread_candidates(default=16, logical=32, physical=16, user_set=True) == (16,)  # OMP_NUM_THREADS kept


def test_physical_cores_count_hardware_threads_of_one_core_once():
    cpuinfo = "\n\n".join(f"processor\t: {cpu}\nphysical id\t: 0\ncore id\t\t: {cpu % 2}\nflags\t\t: avx2"
                          for cpu in range(4))  # 2 cores, 2 hardware threads each
    assert physical_cores(cpuinfo, allowed={0, 1, 2, 3}) == 2
    assert physical_cores(cpuinfo, allowed={0, 2}) == 1  # the two hardware threads of core 0
    assert physical_cores("", allowed={0}) is None


def test_thread_counts_are_swept_for_single_stream_configurations_only():
    planned = plan_configurations(("eager", "openvino"), ("fp32",), "auto", (1, 2), threads=(1,))
    assert [c.label for c in planned] == ["eager fp32", "eager fp32 1 thread", "openvino fp32",
                                          "openvino fp32 2 streams", "openvino fp32 1 thread"]
    assert {c.threads for c in planned} == {0, 1}


def test_bench_sweeps_thread_counts_and_run_auto_takes_the_picks(tmp_path):
    pytest.importorskip("onnxruntime")
    rc = main(["bench", *MODEL, "--runtimes", "onnxruntime", "--dtypes", "fp32", "--batch-sizes", "1",
               "--threads", "2,1", "--out-dir", str(tmp_path), "--no-plot", *FAST])
    document = json.loads((tmp_path / "bench.json").read_text())
    assert rc == 0 and document["settings"]["threads"] == 2 and document["settings"]["swept_threads"] == [1]
    rows = {r["label"]: r for r in document["rows"]}
    assert rows["onnxruntime fp32 1 thread"]["threads"] == 1 and "threads" not in rows["onnxruntime fp32"]
    assert next(c for c in document["configurations"]
                if c["label"] == "onnxruntime fp32 1 thread")["intra_op_num_threads"] == 1
    assert "also swept for accelport's single-stream rows: 1" in (tmp_path / "bench.md").read_text()
    expected = fastest_passing(document["rows"], 1, "fp32")
    rc = main(["run", *MODEL, "--runtime", "auto", "--out-dir", str(tmp_path), "--iters", "2", "--warmup", "0"])
    target = json.loads((tmp_path / "summary.json").read_text())["target"]
    assert rc == 0 and target["threads"] == expected.get("threads", 2)
    assert target["intra_op_num_threads"] == target["threads"] or target["runtime"] == "eager"


@pytest.mark.parametrize("value", ["", "auto,2", "x", " , "])
def test_threads_that_are_neither_auto_nor_counts_are_user_errors(tmp_path, capsys, value):
    assert main(["bench", f"--threads={value}", "--out-dir", str(tmp_path)]) == 2
    assert "--threads" in capsys.readouterr().err and not (tmp_path / "bench.json").exists()
