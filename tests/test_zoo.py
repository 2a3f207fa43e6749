"""accelport zoo: bad input is refused before any model is loaded; a killed sweep resumes keeping its finished
rows; a child over its time or memory limit is a row and the sweep goes on; torchrun gives the rows of one process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from accelport.cli import main

REPO = Path(__file__).resolve().parent.parent
IMAGE = str(REPO / "samples" / "chelsea.jpg")
MODELS = ["test_resnet", "test_vit"]  # the limit tests: two models, to show the sweep goes on after the first
# The sweeps that must run to the end: one tiny model on two runtimes (two children each, a few seconds apiece).
SWEEP = ["zoo", "--models", "test_resnet", "--runtimes", "eager,onnxruntime", "--images", IMAGE, "--warmup", "0",
         "--iters", "1", "--hub-timeout", "0.1", "--no-plot", "-q"]
TIMING = {"latency_ms", "p50_ms", "setup_s", "wall_s", "speedup_vs_eager",  # measured, so never equal twice
          "timing_reliable", "speedup_reliable"}  # judged from the machine's load at that moment


def comparable(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in TIMING} for row in rows]


def read_rows(out_dir: Path) -> list[dict]:
    return json.loads((out_dir / "zoo.json").read_text())["rows"]


@pytest.fixture(scope="module")
def child_env(tmp_path_factory):
    """One thread per child in every sweep of this module (torchrun sets OMP_NUM_THREADS=1 for its workers, and
    the same thread count keeps ONNX Runtime's sums identical); one export cache; an offline Hub."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OMP_NUM_THREADS", "1")
        patch.setenv("HF_HUB_OFFLINE", "1")
        patch.setenv("ACCELPORT_CACHE_DIR", str(tmp_path_factory.mktemp("zoo_cache")))
        yield dict(os.environ)


@pytest.fixture(scope="module")
def resumed(tmp_path_factory, child_env):
    """One sweep, killed with SIGKILL once its first row is journaled, then resumed: (out dir, the row that was
    journaled before the kill). The torchrun test compares its rows with these (a sweep per process costs ~6 s of
    imports per child on 2 cores, so the module runs two sweeps, not three)."""
    out_dir = tmp_path_factory.mktemp("resumed")
    command = [sys.executable, "-m", "accelport", *SWEEP, "--out-dir", str(out_dir)]
    sweep = subprocess.Popen(command, env=child_env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    journal = out_dir / "zoo.journal.jsonl"
    deadline = time.monotonic() + 300
    while not (journal.exists() and len(journal.read_text().splitlines()) >= 2):  # header + one finished row
        assert sweep.poll() is None and time.monotonic() < deadline, "the sweep ended before it could be killed"
        time.sleep(0.1)
    os.kill(sweep.pid, signal.SIGKILL)
    sweep.wait()
    kept = json.loads(journal.read_text().splitlines()[1])
    assert not (out_dir / "zoo.json").exists()
    with pytest.MonkeyPatch.context() as patch:
        for key, value in child_env.items():
            patch.setenv(key, value)
        assert main([*SWEEP, "--out-dir", str(out_dir), "--resume"]) == 0
    return out_dir, kept


def test_a_sweep_writes_every_cell_with_a_verdict_and_the_speedup_over_eager(resumed):
    out_dir, _ = resumed
    rows = read_rows(out_dir)
    assert [(r["model"], r["runtime"]) for r in rows] == [("test_resnet", "eager"), ("test_resnet", "onnxruntime")]
    assert all(r["status"] == "passed" and r["reason"] is None for r in rows)
    assert all(r["speedup_vs_eager"] == 1.0 for r in rows if r["runtime"] == "eager")
    assert all(isinstance(r["timing_reliable"], bool) for r in rows)  # each child's own verdict on its timing
    assert rows[1]["speedup_reliable"] is (rows[0]["timing_reliable"] and rows[1]["timing_reliable"])
    assert all(r["export_route"] == "torchscript" for r in rows if r["runtime"] == "onnxruntime")
    assert {p.name for p in out_dir.iterdir()} >= {"zoo.json", "zoo.csv", "zoo.md", "zoo.journal.jsonl"}
    mark = "" if rows[0]["timing_reliable"] else "?"  # a busy CI box: the cell's own verdict marks its speed-up
    assert f"| test_resnet | pass 1.00x{mark} | pass " in (out_dir / "zoo.md").read_text()
    assert not list(out_dir.glob(".*.tmp"))  # everything written atomically, nothing left behind


def test_a_sweep_killed_with_sigkill_resumes_keeping_the_rows_it_had_finished(resumed):
    out_dir, kept = resumed
    rows = read_rows(out_dir)
    again = next(r for r in rows if (r["model"], r["runtime"]) == (kept["model"], kept["runtime"]))
    assert again["wall_s"] == kept["wall_s"]  # the finished row was kept as it was, not run again
    assert len(rows) == 2 and len({(r["model"], r["runtime"]) for r in rows}) == 2  # the other one ran once


@pytest.mark.parametrize(("flag", "status", "words"), [
    (["--timeout", "0.5"], "timed_out", "0.5 s limit"),
    (["--memory-limit", "0.5"], "crashed", "out of memory"),
])
def test_a_child_over_its_limit_is_a_row_and_the_sweep_goes_on(flag, status, words, child_env, tmp_path,
                                                               monkeypatch, capsys):
    for key, value in child_env.items():
        monkeypatch.setenv(key, value)
    started = time.monotonic()
    code = main(["zoo", "--models", *MODELS, "--runtimes", "eager", "--images", IMAGE, "--warmup", "0", "--iters",
                 "1", "--no-plot", "--out-dir", str(tmp_path), *flag])
    assert code == 1  # a cell that did not end with a verdict fails the sweep
    rows = read_rows(tmp_path)
    assert [r["model"] for r in rows] == MODELS  # the first model's fate did not end the sweep
    assert all(r["status"] == status and words in r["reason"] for r in rows)
    assert time.monotonic() - started < 120
    assert status in (tmp_path / "zoo.md").read_text()


@pytest.mark.slow
@pytest.mark.zoo_full  # 12 s (three processes' imports): opt-in, to keep the default suite under 5 minutes; eval's
# torchrun tests (test_evaluation.py, test_simdevice.py) run the same rank split by default
def test_torchrun_with_two_processes_gives_the_rows_of_one(resumed, child_env, tmp_path):
    """Two ranks share the cells; their rows equal the single-process (killed and resumed) sweep's."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m",
               "accelport", *SWEEP, "--device", "cpu", "--out-dir", str(tmp_path)]
    done = subprocess.run(command, env=child_env, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    document = json.loads((tmp_path / "zoo.json").read_text())
    assert document["world_size"] == 2
    assert comparable(document["rows"]) == comparable(read_rows(resumed[0]))


def _corrupt_journal(out_dir: Path) -> list[str]:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "zoo.journal.jsonl").write_text("not json\n")
    return ["--resume"]


@pytest.mark.parametrize(("args", "culprit"), [
    (["--models", "no_such_model_xyz"], "no_such_model_xyz"),
    (["--models", "no_such_family_*"], "no_such_family_*"),
    (["--models", "test_resnet", "--runtimes", "eager,tensorrt"], "tensorrt"),
    (["--models", "test_resnet", "--dtypes", "fp8"], "fp8"),
    (["--models", "test_resnet", "--dtypes", "fp32", "--calibration", "."], "--calibration"),
    (["--models", "test_resnet", "--dtypes", "fp32,int8", "--calibration", "no_such_folder"], "no_such_folder"),
    (["--models", "test_resnet", "--models-file", "missing.txt"], "missing.txt"),
    # an unknown name in the file was blamed on --models
    (["--models-file", "{models}"], "--models-file {models}: 'not_a_model_xyz': not a timm model name"),
    # a finite but huge limit overflowed RLIMIT_AS in the child: exit 3
    (["--models", "test_resnet", "--memory-limit", "1e30"], "--memory-limit 1e+30: must be 0 (no limit) or"),
    (["--models", "test_resnet", "--out-dir", "{file}/sub"], "--out-dir"),
    (["--models", "test_resnet", "--journal"], "zoo.journal.jsonl"),
])
def test_bad_input_is_exit_2_naming_the_culprit_before_any_model_is_loaded(args, culprit, tmp_path, monkeypatch,
                                                                           capsys):
    import timm

    import accelport.zoo.api

    def forbidden(*_args, **_kwargs):
        raise AssertionError("a model was loaded or a child started before the input was checked")

    monkeypatch.setattr(timm, "create_model", forbidden)
    monkeypatch.setattr(accelport.zoo.api, "run_cell", forbidden)
    (tmp_path / "file").write_text("x")
    (tmp_path / "models.txt").write_text("test_resnet\n# a comment\nnot_a_model_xyz\n")
    out_dir = tmp_path / "out"
    args = [a.replace("{file}", str(tmp_path / "file")).replace("{models}", str(tmp_path / "models.txt"))
            for a in args]
    culprit = culprit.replace("{models}", str(tmp_path / "models.txt"))
    if "--journal" in args:
        args = [a for a in args if a != "--journal"] + _corrupt_journal(out_dir)
    if "--out-dir" not in args:
        args += ["--out-dir", str(out_dir)]
    monkeypatch.chdir(tmp_path)
    assert main(["zoo", *args, "-q"]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and error[0].startswith("accelport: error:") and culprit in error[0]
    assert not (out_dir / "zoo.json").exists() and not (out_dir / "cells").exists()


def test_int8_cells_take_the_calibration_images_and_a_failure_the_proof_clears_says_so(tmp_path):
    from accelport.zoo.cell import Cell, child_command, failed_reason
    from accelport.zoo.config import ZooConfig

    config = ZooConfig(dtypes=("fp32", "int8"), calibration=(IMAGE,))
    int8 = child_command(Cell("resnet18", "openvino", "int8"), config, "cpu", tmp_path)
    fp32 = child_command(Cell("resnet18", "openvino", "fp32"), config, "cpu", tmp_path)
    assert int8[int8.index("--calibration") + 1:] == [str(Path(IMAGE).resolve())]  # absolute: the child runs elsewhere
    assert "--calibration" not in fp32  # run refuses --calibration without a quantised dtype
    assert "--calibration" not in child_command(Cell("resnet18", "openvino", "int8"), ZooConfig(), "cpu", tmp_path)
    checks = ["min_sample_cosine 0.98 < 0.99"]
    assert "structural proof passed" in failed_reason(checks, "passed", "int8")
    assert failed_reason(checks, "failed", "int8") == failed_reason(checks, None, "int8") == (
        "failed checks: min_sample_cosine 0.98 < 0.99")
