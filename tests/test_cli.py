"""The main job end to end, in-process through cli.main, plus every user error and its exit code."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from accelport.cli import main
from accelport.runners.eager import EagerRunner

ROOT = Path(__file__).resolve().parent.parent
FAST = ["--iters", "3", "--warmup", "1"]
ORIGINAL_FIELDS = {"status", "pretrained_used", "local_weight_used", "weight_path", "output_shape", "max_abs_diff",
                   "mean_abs_diff", "cosine_similarity", "top1_match", "top5_match", "match_within_1_percent",
                   "latency_ms"}


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, checkpoint_files):
    """One default run (all six samples, cpu target) with real-format weights and saved outputs."""
    out = tmp_path_factory.mktemp("run")
    rc = main(["run", "--weights", str(checkpoint_files["safetensors"]), "--device", "cpu", "--out-dir", str(out),
               "--save-outputs", *FAST])
    return rc, out


def test_run_passes_and_writes_every_artifact_atomically(full_run):
    rc, out = full_run
    assert rc == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "accuracy_compare.log", "reference_outputs.npy", "report.md", "summary.json", "target_outputs.npy"]


def test_summary_keeps_the_original_report_fields_and_documents_provenance(full_run, checkpoint_files):
    summary = json.loads((full_run[1] / "summary.json").read_text())
    assert summary.keys() >= ORIGINAL_FIELDS
    assert summary["status"] == "passed" and summary["schema_version"] == 2
    assert summary["pretrained_used"] is True and summary["local_weight_used"] is True
    assert summary["weight_path"] == str(checkpoint_files["safetensors"].resolve())
    assert summary["weight_sha256"] == hashlib.sha256(checkpoint_files["safetensors"].read_bytes()).hexdigest()
    assert summary["output_shape"] == [6, 1000]
    assert summary["top1_match"] is True and summary["top5_match"] is True
    assert summary["latency_ms"] == summary["latency"]["compute"]["mean_ms"] > 0
    assert summary["model"]["data_config"]["input_size"] == [3, 224, 224]
    assert summary["model"]["data_config"]["size_mode"] == "train"
    assert summary["environment"]["torch"] and summary["environment"]["timm"]
    assert summary["target"]["fp32_math"] == "strict" and summary["target"]["precision"] == "fp32"
    assert {c["name"] for c in summary["parity"]["checks"]} >= {"min_sample_cosine", "max_sample_rel_l2"}
    assert [Path(s["path"]).name for s in summary["samples"]] == [
        "astronaut.jpg", "camera.png", "chelsea.jpg", "coffee.jpg", "horse.png", "rocket.jpg"]
    for sample in summary["samples"]:
        assert len(sample["reference_top5"]) == 5 and sample["reference_top5"] == sample["target_top5"]
        assert sample["metrics"]["cosine_similarity"] == pytest.approx(1.0)


def test_saved_outputs_are_the_compared_outputs(full_run):
    out = full_run[1]
    summary = json.loads((out / "summary.json").read_text())
    reference, target = np.load(out / "reference_outputs.npy"), np.load(out / "target_outputs.npy")
    assert reference.shape == (6, 1000)
    assert float(np.abs(reference - target).max()) == summary["max_abs_diff"]
    assert np.argsort(-reference[0])[:5].tolist() == summary["samples"][0]["reference_top5"]


def test_log_and_report_render_the_verdict_with_its_criteria(full_run, checkpoint_files):
    log = (full_run[1] / "accuracy_compare.log").read_text()
    assert "status: PASSED" in log and "PASS  min_sample_cosine" in log and ">= 0.99999" in log
    report = (full_run[1] / "report.md").read_text()
    assert "**Verdict: PASSED**" in report and "| min_sample_cosine |" in report and "## Latency" in report
    assert hashlib.sha256(checkpoint_files["safetensors"].read_bytes()).hexdigest() in report  # the file's own hash
    summary = json.loads((full_run[1] / "summary.json").read_text())
    assert f"allocator: {summary['environment']['allocator']['settings']}" in report


def test_features_head_and_test_size(tmp_path, checkpoint_files, two_images):
    rc = main(["run", "--weights", str(checkpoint_files["pth"]), "--device", "cpu", "--features", "--test-size",
               "--images", *two_images, "--out-dir", str(tmp_path), *FAST])
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert rc == 0
    assert summary["output_shape"] == [2, 320]
    assert summary["top1_match"] is None and "reference_top5" not in summary["samples"][0]
    assert summary["model"]["data_config"]["input_size"] == [3, 288, 288]
    assert summary["model"]["data_config"]["size_mode"] == "test"
    table = (tmp_path / "report.md").read_text().split("| image | cosine | rel L2 | max abs diff |")[1]
    assert all(Path(p).name in table for p in two_images)  # the per-image table, without the classifier's columns


def test_really_different_target_fails_with_exit_1_and_localises_the_divergence(tmp_path, two_images,
                                                                                 checkpoint_files, monkeypatch):
    """One failing run (bf16 emulated on a CPU is slow) for the exit code, the criteria and the layer report."""
    import accelport.atomic as atomic

    written_sets, write_set = [], atomic.write_set_atomic
    monkeypatch.setattr(atomic, "write_set_atomic",
                        lambda out_dir, writers: written_sets.append(sorted(writers)) or write_set(out_dir, writers))
    # bf16 differs from the fp32 reference on every CPU (7-bit mantissa), unlike channels-last fp32, which some CPUs
    # (AVX-512/AMX) compute bit-identically: criteria no bf16 run can meet make the failure certain everywhere.
    rc = main(["run", "--weights", str(checkpoint_files["safetensors"]), "--device", "cpu", "--dtype", "bf16",
               "--criterion", "min_cosine=0.9999999", "--criterion", "max_rel_l2=1e-6", "--layers-on-fail",
               "--images", two_images[0], "--out-dir", str(tmp_path), *FAST])
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert rc == 1 and summary["status"] == "failed"
    assert summary["criteria"]["precision"] == "bf16" and summary["criteria"]["min_cosine"] == 0.9999999
    assert summary["criteria"]["max_rel_l2"] == 1e-6
    assert summary["criteria"]["overridden"] == {"min_cosine": 0.9999999, "max_rel_l2": 1e-6}
    log = (tmp_path / "accuracy_compare.log").read_text()
    assert "FAIL  min_sample_cosine" in log
    assert "criteria bf16, overridden: min_cosine=0.9999999, max_rel_l2=1e-06" in log
    assert "(criteria `bf16, overridden: min_cosine=0.9999999" in (tmp_path / "report.md").read_text()
    assert {"layers.json", "layers.md", "layers.csv"} <= {p.name for p in tmp_path.iterdir()}
    assert json.loads((tmp_path / "summary.json").read_text())["layer_report"] == "layers.md"
    assert "[layers.md](layers.md)" in (tmp_path / "report.md").read_text()
    # the answer itself, not only a link: layers.json's first_divergent is the bf16 pass's own, not the answer
    layers = json.loads((tmp_path / "layers.json").read_text())
    answer = {mode: module for mode, module in layers["answer"].items() if mode in layers["modes"]}
    assert layers["answer"]["rule"].startswith("the strict fp32 pass's where it diverges") and any(answer.values())
    assert summary["layers_answer"] == answer
    assert f"First divergent module: chained `{answer['chained']}`" in (tmp_path / "report.md").read_text()
    # one atomic set: an interruption between two sets left the run's new files beside an older layer report
    assert written_sets == [["accuracy_compare.log", "layers.csv", "layers.json", "layers.md", "layers.png",
                             "report.md", "summary.json"]]


@pytest.fixture(scope="module")
def resnet_checkpoint(tmp_path_factory) -> Path:
    """A real checkpoint of another architecture: it must be refused, never loaded partially."""
    import timm
    import torch

    path = tmp_path_factory.mktemp("other") / "resnet.pth"
    torch.save(timm.create_model("resnet10t").state_dict(), path)
    return path


def _bad_inputs(tmp_path: Path, resnet_checkpoint: Path) -> dict[str, tuple[list[str], str]]:
    import torch

    corrupt = tmp_path / "corrupt.png"  # written by the test: building the cases has no side effect
    return {
        "missing-image": (["--images", str(tmp_path / "nope.jpg")], "nope.jpg: no such file or folder"),
        "device-file-image": (["--images", "/dev/null"], "/dev/null: not a regular file or a folder"),
        "corrupt-image": (["--images", str(corrupt)], "corrupt.png: not a readable image"),
        "missing-weights": (["--weights", str(tmp_path / "absent.safetensors")], "absent.safetensors: no such file"),
        "other-architecture": (["--weights", str(resnet_checkpoint)], "resnet.pth does not fit"),
        "require-pretrained": (["--require-pretrained"], "--require-pretrained: no pretrained weights found"),
        "unknown-device": (["--device", "tpu"], "--device 'tpu': unknown device type"),
        "absent-cuda-index": (["--device", "cuda:7"] if not torch.cuda.is_available() else ["--device", "cuda:99"],
                              "--device 'cuda:"),
        "absent-npu": (["--device", "npu"], "--device 'npu'"),
        "batch-size-0": (["--batch-size", "0"], "--batch-size 0: must be between 1 and 1048576"),
        "iters-0": (["--iters", "0"], "--iters 0: must be at least 1"),
        "unknown-criterion": (["--criterion", "min_cos=1"], "--criterion min_cos=1: unknown key"),
        "unknown-runtime": (["--runtime", "tensorrt"], "--runtime 'tensorrt'"),
        "streams-0": (["--streams", "0"], "--streams 0: must be between 1 and"),
        "streams-on-eager": (["--streams", "2"], "--streams 2 does not apply to --runtime eager"),
        "micro-batch-0": (["--micro-batch", "0"], "--micro-batch 0: must be between 1 and"),
        "unknown-model": (["--model", "no_such_model_xyz"], "--model 'no_such_model_xyz': not a timm model name"),
    }


BAD_INPUTS = list(_bad_inputs(Path("/nonexistent"), Path("/nonexistent")))  # the case names, for the test ids


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_every_user_error_has_its_message_exit_code_2_and_no_traceback(case, tmp_path, resnet_checkpoint, capsys):
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    flags, message = _bad_inputs(tmp_path, resnet_checkpoint)[case]
    out_dir = tmp_path / "out"
    rc = main(["run", "--device", "cpu", "--out-dir", str(out_dir), *FAST, *flags])
    err = capsys.readouterr().err
    assert rc == 2, flags
    assert message in err, (flags, err)
    assert "Traceback" not in err
    assert not out_dir.exists(), "a failed run must not leave partial artifacts"


def test_argparse_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as excinfo:
        main(["run", "--dtype", "fp8"])
    assert excinfo.value.code == 2 and "invalid choice: 'fp8'" in capsys.readouterr().err


def test_help_documents_every_flag(capsys):
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = capsys.readouterr().out
    for flag in ("--model", "--weights", "--require-pretrained", "--hub-timeout", "--features", "--images",
                 "--skip-bad-images", "--test-size", "--device", "--runtime", "--dtype", "--channels-last",
                 "--fp32-math", "--batch-size", "--warmup", "--iters", "--criterion", "--out-dir", "--save-outputs",
                 "--streams", "--micro-batch"):
        assert flag in text
    assert "exit codes" in text


def test_inference_py_is_the_run_command_random_init_is_flagged_and_bad_images_skipped(tmp_path, two_images):
    """One random-init run through the root script (runs cost seconds here): the script is the run command, random
    init is flagged in every artifact, and a skipped bad image is recorded."""
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff not really a jpeg")
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, str(ROOT / "inference.py"), "--device", "cpu", "--images", *two_images,
                             str(bad), "--skip-bad-images", "--out-dir", str(out), "--iters", "2", "--warmup", "0",
                             "-q"], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "status: PASSED" in result.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["samples"][0]["path"] == two_images[0]
    assert summary["pretrained_used"] is False and summary["weight_path"] is None
    assert "RANDOM INIT" in (out / "accuracy_compare.log").read_text()
    assert "no pretrained weights were found" in (out / "report.md").read_text()
    assert summary["inputs"]["num_images"] == 2 and summary["inputs"]["skipped"][0]["path"] == str(bad)
    said = "1 file(s) skipped as unreadable (--skip-bad-images), not compared:"  # json-only before: 1/3 dropped unseen
    assert f"{said}\n- {bad}: not a readable image" in (out / "report.md").read_text()  # the path once
    assert f"{said}\n  {bad}: " in (out / "accuracy_compare.log").read_text()


def test_a_run_without_save_outputs_leaves_no_earlier_outputs_beside_its_summary(full_run, two_images, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(full_run[1], out)  # the earlier run's set, saved outputs included
    assert main(["run", "--device", "cpu", "--images", two_images[0], "--out-dir", str(out), *FAST]) == 0
    assert not (out / "reference_outputs.npy").exists() and not (out / "target_outputs.npy").exists()


class EagerNamedCompile(EagerRunner):
    """Eager under the compile runtime's name: what `layers` refuses depends on the runtime asked for, and an
    Inductor build would cost the suite ~10 s for nothing this test checks."""

    name = "compile"


def test_layers_on_fail_with_a_compile_target_keeps_the_failed_runs_files(tmp_path, two_images, capsys, monkeypatch):
    """An Inductor graph cannot be compared module by module: run --runtime compile --layers-on-fail on a broken
    port ended in an internal error (exit 3) and wrote none of the run's files."""
    import timm
    import torch
    from safetensors.torch import save_file

    from accelport.runners import _REGISTRY

    monkeypatch.setitem(_REGISTRY, "compile", (__name__, "EagerNamedCompile", None))
    torch.manual_seed(0)
    state = timm.create_model("test_convnext2").state_dict()
    head = "head.fc.weight"  # the blocks' layer scale (1e-6 at init) would hide a fault inside them
    noise = torch.randn(state[head].shape, generator=torch.Generator().manual_seed(0))
    clean, broken, out = tmp_path / "clean.safetensors", tmp_path / "broken.safetensors", tmp_path / "out"
    save_file(state, str(clean))
    save_file({**state, head: state[head] + 0.5 * state[head].abs().mean() * noise}, str(broken))
    rc = main(["run", "--model", "test_convnext2", "--weights", str(clean), "--target-weights", str(broken),
               "--runtime", "compile", "--device", "cpu", "--layers-on-fail", "--images", two_images[0],
               "--out-dir", str(out), *FAST])
    summary = json.loads((out / "summary.json").read_text())
    assert rc == 1 and summary["status"] == "failed" and summary["layer_report"] is None
    assert "layer comparison not run: --runtime compile: `accelport layers` supports" in capsys.readouterr().err
    assert {p.name for p in out.iterdir()} >= {"summary.json", "report.md", "accuracy_compare.log"}
    assert not any(p.name.startswith("layers") for p in out.iterdir())
    assert summary["layers_not_run"].startswith("--runtime compile: `accelport layers` supports")
    assert "Asked for (--layers-on-fail), not run: --runtime compile:" in (out / "report.md").read_text()
