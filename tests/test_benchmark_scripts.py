"""The scripts under benchmarks/ leave nothing behind: no temporary folders, no cache, no rewritten docs file."""

from __future__ import annotations

import importlib.util
import json
import tempfile
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"benchmark_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def private_tmp(tmp_path, monkeypatch):
    """tempfile's folder, watched: whatever a script creates there must be gone when it returns."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


@pytest.mark.parametrize("given", [False, True])
def test_bench_runtimes_removes_its_temporary_cache_but_keeps_a_given_one(tmp_path, private_tmp, monkeypatch, given):
    script = load_script("bench_runtimes")
    used = []

    def fake_measure(args, cache_dir):
        used.append(Path(cache_dir))
        (Path(cache_dir) / "model.onnx").write_bytes(b"\0" * 2**20)  # what the exports leave
        return {"bench": {}}

    monkeypatch.setattr(script, "measure", fake_measure)
    monkeypatch.setattr(script, "render", lambda report: "")
    given_dir = tmp_path / "cache"
    given_dir.mkdir()
    argv = ["--out-dir", str(tmp_path / "out"), *(["--cache-dir", str(given_dir)] if given else [])]
    assert script.main(argv) == 0
    assert list(private_tmp.iterdir()) == []
    assert used == [given_dir] if given else not used[0].exists()
    assert (given_dir / "model.onnx").exists() is given


def test_eval_throughput_writes_only_its_out_file(tmp_path, private_tmp):
    published = BENCHMARKS.parent / "docs" / "eval_throughput_cpu.json"
    before = published.read_bytes()
    out = tmp_path / "eval_throughput.json"
    load_script("eval_throughput").main(["--images", "4", "--repeats", "1", "--model-batches", "1", "--batch-size",
                                         "2", "--workers", "0", "--model", "test_convnext2", "--out", str(out)])
    report = json.loads(out.read_text())
    assert report["dataset"]["images"] == 4 and report["eval"]["stages"]
    assert list(private_tmp.iterdir()) == []  # images and eval's output were in a removed temporary folder
    assert published.read_bytes() == before


TIMING_SCRIPTS = ("baseline_ratios", "bench_runtimes", "compile_int8_vs_fp32", "compile_paths", "eval_throughput",
                  "int8_nncf_settings", "openvino_int8_remainder", "paired_ratio",
                  # these open accelport jobs through the API (open_job sets the allocator)
                  "false_alarms", "int8_errors", "int8_faults", "run_layers_agreement")


@pytest.mark.parametrize("name", TIMING_SCRIPTS)
def test_a_bad_allocator_setting_is_a_usage_error_naming_it_before_any_work(name, monkeypatch, capsys, tmp_path):
    """The scripts set the allocator as the CLI does; a bad ACCELPORT_ALLOCATOR printed a traceback there."""
    monkeypatch.setenv("ACCELPORT_ALLOCATOR", "jemalloc-please")
    required = ["--out", "out.json"] if name in ("false_alarms", "int8_errors", "run_layers_agreement") else []
    monkeypatch.setattr("sys.argv", [f"{name}.py", *required])  # each would then work for minutes
    monkeypatch.chdir(tmp_path)  # a script that got past the check would write here, not into the repository
    with pytest.raises(SystemExit) as stopped:
        script = load_script(name)
        script.main()
    err = capsys.readouterr().err
    assert stopped.value.code == 2 and "ACCELPORT_ALLOCATOR='jemalloc-please': expected one of retain, default" in err
    assert not list(tmp_path.iterdir())


def test_paired_ratio_times_a_configuration_against_itself_unrewritten_and_refuses_what_has_no_such_baseline(
        tmp_path, monkeypatch, capsys):
    pytest.importorskip("openvino")
    monkeypatch.setenv("ACCELPORT_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "ratio.json"
    common = ["paired_ratio.py", "--model", "test_convnext2", "--batch-size", "1", "--pairs", "2", "--block", "1"]
    monkeypatch.setattr("sys.argv", [*common, "--runtime", "openvino", "--baseline", "unrewritten", "--out", str(out)])
    assert load_script("paired_ratio").main() == 0
    result = json.loads(out.read_text())
    assert result["baseline"] == "openvino fp32 without graph rewrites" and result["parity"]["passed"]
    assert result["target_settings"]["graph_rewrites"] == ["layernorm2d-channel-first"] and len(result["pairs"]) == 2
    monkeypatch.setattr("sys.argv", [*common, "--runtime", "eager", "--baseline", "unrewritten", "--out",
                                     str(tmp_path / "not.json")])
    with pytest.raises(SystemExit) as stopped:
        load_script("paired_ratio").main()
    assert stopped.value.code == 2 and "--runtime eager has no graph rewrites" in capsys.readouterr().err
    assert not (tmp_path / "not.json").exists()
