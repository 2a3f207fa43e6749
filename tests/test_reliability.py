"""Timings a user can believe: the machine's load is recorded around each timing, and disturbed figures are
marked ``reliable: false`` with reasons, in summary.json, report.md, accuracy_compare.log, bench.json and bench.md.

The decision is a pure function, tested here on recorded load samples; two end-to-end checks run the real
commands, one while this test saturates every CPU with busy loops, one on a machine that /proc shows idle.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from accelport.cli import main
from accelport.errors import UsageError
from accelport.machine_load import (
    MIN_WINDOW_S,
    WINDOW_ENV,
    CpuReading,
    LoadMonitor,
    _process_ticks,
    probe,
    read_cpu,
    window_between,
)
from accelport.reliability import DEFAULT_THRESHOLDS, assess

MODEL = ["--model", "test_convnext2", "--device", "cpu"]

# Recorded on the 2-core development machine: a quiet window, and one while other jobs kept both cores busy.
IDLE_WINDOW = {"seconds": 0.8, "cpu_count": 2, "foreign_busy_cores": 0.03, "own_busy_cores": 1.96,
               "steal_share": 0.0, "loadavg_before": [0.31, 0.4, 0.3], "loadavg_after": [0.35, 0.4, 0.3],
               "procs_running_before": 1, "procs_running_after": 1, "busiest_others": []}
BUSY_WINDOW = {"seconds": 1.2, "cpu_count": 2, "foreign_busy_cores": 1.83, "own_busy_cores": 0.16,
               "steal_share": 0.0, "loadavg_before": [12.45, 10.3, 5.5], "loadavg_after": [12.5, 10.3, 5.5],
               "procs_running_before": 9, "procs_running_after": 8,
               "busiest_others": [{"pid": 9936, "name": "python", "cores": 0.33}]}


def stats(p50: float, std: float = 0.5, p90: float | None = None, p99: float | None = None, iters: int = 50):
    return {"iters": iters, "p50_ms": p50, "std_ms": std, "p90_ms": p90 or p50 * 1.05, "p99_ms": p99 or p50 * 1.2,
            "mean_ms": p50, "min_ms": p50 * 0.95, "max_ms": p50 * 1.3, "batch_size": 1, "images_per_s": 1000 / p50}


def codes(verdict):
    return [r["code"] for r in verdict["reasons"]]


@pytest.fixture(autouse=True)
def default_load_window(monkeypatch):
    """The load window a user gets (conftest shortens it for the rest of the suite)."""
    monkeypatch.delenv(WINDOW_ENV, raising=False)


def test_the_load_window_is_the_default_or_what_the_variable_says(monkeypatch):
    assert LoadMonitor().min_window_s == MIN_WINDOW_S == 0.25
    monkeypatch.setenv(WINDOW_ENV, "0.05")
    assert LoadMonitor().min_window_s == 0.05 and LoadMonitor(min_window_s=0.2).min_window_s == 0.2
    for bad in ("abc", "-1", "nan", "1e9"):
        monkeypatch.setenv(WINDOW_ENV, bad)
        with pytest.raises(UsageError, match=f"{WINDOW_ENV}={bad!r}"):
            LoadMonitor()


def test_a_bad_load_window_is_exit_2_before_any_work(monkeypatch, capsys):
    monkeypatch.setenv(WINDOW_ENV, "soon")
    assert main(["run", "--model", "no_such_model_xyz", "--device", "cpu"]) == 2  # refused before the model
    assert f"{WINDOW_ENV}='soon'" in capsys.readouterr().err


def test_a_quiet_machine_and_consistent_samples_are_reliable():
    verdict = assess({"compute": stats(36.0), "with_copies": stats(36.4)}, [IDLE_WINDOW, IDLE_WINDOW], threads=2)
    assert verdict == {"reliable": True, "reasons": [], "advice": None}


def test_other_busy_processes_make_a_timing_unreliable_and_are_named():
    verdict = assess({"compute": stats(36.0), "with_copies": stats(36.4)}, [IDLE_WINDOW, BUSY_WINDOW], threads=2)
    assert not verdict["reliable"] and codes(verdict) == ["other_processes"]
    assert "1.83 of 2 cores" in verdict["reasons"][0]["message"] and "python (pid 9936)" in verdict["reasons"][0][
        "message"]
    assert "idle machine" in verdict["advice"] and "--rounds" in verdict["advice"]


def test_other_processes_on_cores_the_timing_does_not_use_are_no_interference():
    window = {**BUSY_WINDOW, "cpu_count": 16, "foreign_busy_cores": 7.0}
    assert assess({"compute": stats(36.0)}, [window], threads=8)["reliable"]
    assert codes(assess({"compute": stats(36.0)}, [{**window, "foreign_busy_cores": 9.0}], threads=8)) == [
        "other_processes"]


def test_cpu_steal_is_interference():
    assert codes(assess({"compute": stats(36.0)}, [{**IDLE_WINDOW, "steal_share": 0.2}], threads=2)) == ["cpu_steal"]


def test_dispersion_flags_the_figures_the_issue_saw():
    # std larger than the mean (as reported under load), and a p90 far above the median
    assert codes(assess({"compute": stats(30.0, std=40.0)}, [], threads=2)) == ["dispersion"]
    # one stalled iteration among 30 (the CI runner's 3.5 ms median with std 1.76 ms) is no dispersion
    assert assess({"compute": stats(3.48, std=1.76, p90=3.9, p99=11.0, iters=30)}, [], threads=2)["reliable"]
    assert codes(assess({"compute": stats(30.0, p90=60.0, p99=70.0)}, [], threads=2)) == ["dispersion"]
    # one hiccup among 50 iterations moves p99 only a little past the median: not a reason
    assert assess({"compute": stats(30.0, std=3.0, p99=55.0)}, [], threads=2)["reliable"]
    # three samples are too few to judge dispersion (bench's slow points)
    assert assess({"compute": stats(30.0, std=40.0, iters=3)}, [], threads=2)["reliable"]


def test_with_copies_faster_than_compute_alone_is_impossible():
    verdict = assess({"compute": stats(302.0), "with_copies": stats(265.0)}, [IDLE_WINDOW], threads=2)
    assert codes(verdict) == ["impossible_order"] and "265 ms" in verdict["reasons"][0]["message"]


def test_a_median_that_moves_between_rounds_is_unreliable():
    assert codes(assess({"compute": stats(30.0)}, [], 2, round_p50_ms=[30.0, 31.0, 62.0])) == ["round_spread"]
    assert assess({"compute": stats(30.0)}, [], 2, round_p50_ms=[30.0, 31.0, 29.5])["reliable"]


def reading(wall_s, busy, own, steal=0, idle=0, processes=None):
    return CpuReading(wall_s=wall_s, cpu_count=2, busy_ticks=busy, steal_ticks=steal, total_ticks=busy + idle + steal,
                      own_ticks=own, processes=processes or {}, loadavg=(1.0, 1.0, 1.0), procs_running=1)


def test_foreign_load_is_all_busy_time_minus_this_process():
    tick = 1 / os.sysconf("SC_CLK_TCK")
    before = reading(10.0, busy=1000, own=100, steal=5, idle=500, processes={7: ("job", 40)})
    after = reading(11.0, busy=1000 + round(1.5 / tick), own=100 + round(0.5 / tick), steal=5 + round(0.1 / tick),
                    idle=500 + round(0.4 / tick), processes={7: ("job", 40 + round(0.9 / tick)), 8: ("new", 3)})
    window = window_between(before, after)
    assert window.foreign_busy_cores == pytest.approx(1.0, abs=0.02)
    assert window.own_busy_cores == pytest.approx(0.5, abs=0.02)
    assert window.steal_share == pytest.approx(0.1 / 2.0, abs=0.01)
    assert window.busiest_others == [{"pid": 7, "name": "job", "cores": pytest.approx(0.9, abs=0.02)}]


def test_a_process_name_with_spaces_and_parentheses_is_parsed():
    line = "4242 (my (odd) name) R 1 4242 4242 0 -1 4194560 100 0 0 0 250 70 0 0 20 0 1 0 100 1000 10"
    assert _process_ticks(line) == ("my (odd) name", 320)


@pytest.fixture
def saturated_cpus():
    """A busy loop on every CPU this process may use (bounded to 300 s), killed when the test ends."""
    if read_cpu() is None:
        pytest.skip("no /proc here: load cannot be measured")
    code = "import time\nend = time.time() + 300\nwhile time.time() < end:\n    pass\n"
    loops = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(len(os.sched_getaffinity(0)))]
    time.sleep(0.5)
    yield
    for loop in loops:
        loop.kill()
    for loop in loops:
        loop.wait(timeout=10)


def test_timings_under_a_saturated_cpu_are_unreliable_in_every_artifact(saturated_cpus, tmp_path, two_images):
    run_dir, bench_dir = tmp_path / "run", tmp_path / "bench"
    main(["run", *MODEL, "--images", two_images[0], "--iters", "10", "--warmup", "1", "--out-dir",
          str(run_dir)])
    latency = json.loads((run_dir / "summary.json").read_text())["latency"]
    assert latency["reliability"]["reliable"] is False
    assert "other_processes" in codes(latency["reliability"])
    assert latency["load"]["compute"]["foreign_busy_cores"] > 0.5
    assert "Timing unreliable (`reliable: false`)" in (run_dir / "report.md").read_text()
    assert "timing UNRELIABLE" in (run_dir / "accuracy_compare.log").read_text()

    main(["bench", *MODEL, "--runtimes", "eager", "--dtypes", "fp32", "--batch-sizes", "1", "--iters", "5",
          "--warmup", "1", "--max-time", "1", "--no-progress", "--no-plot", "--no-peers", "--out-dir", str(bench_dir)])
    document = json.loads((bench_dir / "bench.json").read_text())
    row = next(r for r in document["rows"] if r["status"] == "ok")
    assert row["reliability"]["reliable"] is False and "other_processes" in codes(row["reliability"])
    assert document["timing_reliability"]["reliable"] is False
    assert document["timing_reliability"]["unreliable_baselines"] == [1]
    markdown = (bench_dir / "bench.md").read_text()
    assert "Timings unreliable (`reliable: false`)" in markdown and "**unreliable** (other_processes" in markdown


def test_a_timing_on_an_idle_machine_raises_no_load_alarm(tmp_path, two_images):
    """The timing's own threads are not counted as interference; skip (saying so) when /proc shows other jobs.

    Only the load rules are asserted: a shared CI runner can stall one iteration at any time (seen: p99 3x p50), so
    whether this run's samples were dispersed is the machine's business; the dispersion rules are tested above on
    recorded statistics. The flag and the report must agree whatever it was.
    """
    before = probe(0.5)
    if before is None:
        pytest.skip("no /proc here: load cannot be measured")
    if before.foreign_busy_cores > 0.1:
        pytest.skip(f"machine not idle: other processes keep {before.foreign_busy_cores:.2f} cores busy "
                    f"({before.busiest_others})")
    main(["run", *MODEL, "--images", two_images[0], "--iters", "30", "--warmup", "10", "--out-dir",
          str(tmp_path)])
    latency = json.loads((tmp_path / "summary.json").read_text())["latency"]
    reliability, window = latency["reliability"], latency["load"]["compute"]
    busy = [w for w in latency["load"].values() if w and w["foreign_busy_cores"] > 0.1 and w["busiest_others"]]
    if busy:  # any timed window (compute or with copies): the other_processes rule reads them all
        pytest.skip(f"another process became busy during the timing: {busy[0]['busiest_others']}")
    assert window["cpu_count"] >= 1 and window["own_busy_cores"] > 0.3  # the timing's work is its own
    assert "other_processes" not in codes(reliability), reliability
    # The hypervisor may take time from a cloud VM at any moment (seen: 6.1 % on a CI runner); when it does, the
    # alarm is right. So cpu_steal must be raised exactly when a recorded window shows steal above the limit.
    steal = max(w["steal_share"] for w in latency["load"].values() if w)
    assert ("cpu_steal" in codes(reliability)) == (steal > DEFAULT_THRESHOLDS.max_steal_share), (steal, reliability)
    assert reliability["reliable"] == (not reliability["reasons"]) == (reliability["advice"] is None)
    report = (tmp_path / "report.md").read_text()
    assert ("Timing reliable: yes" in report) == reliability["reliable"]


def test_a_short_timing_is_measured_over_enough_ticks():
    started = time.monotonic()
    with LoadMonitor(min_window_s=0.2) as monitor:
        pass
    if monitor.window is None:
        pytest.skip("no /proc here")
    assert monitor.window.seconds >= 0.2 and time.monotonic() - started >= 0.2
