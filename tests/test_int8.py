"""--dtype int8: each engine's own quantiser end to end, the calibration record, the refusals, a weight fault."""

from __future__ import annotations

import importlib.util
import json

import pytest
import timm
import torch
from safetensors.torch import save_file

import accelport
from accelport.cli import main
from accelport.preprocess import DEFAULT_SAMPLES_DIR

MODEL = "test_convnext2"
FAULTY = "stem.0.weight"  # on the main path (random init scales the blocks down to ~1e-6)


def _installed(*modules: str) -> bool:
    return all(importlib.util.find_spec(module) is not None for module in modules)


ENGINES = {"onnxruntime": ("onnxruntime", "onnx"), "openvino": ("openvino", "onnx", "nncf")}


@pytest.fixture(scope="module", autouse=True)
def cache_dir(tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        path = tmp_path_factory.mktemp("accelport_cache")
        patch.setenv("ACCELPORT_CACHE_DIR", str(path))
        yield path


@pytest.fixture(scope="module")
def weights_files(tmp_path_factory):
    """A random-init checkpoint of the tiny model, and a copy with 1 % noise in one weight (fails fp32)."""
    torch.manual_seed(0)
    state = {k: v.contiguous() for k, v in timm.create_model(MODEL, pretrained=False).state_dict().items()}
    root = tmp_path_factory.mktemp("int8_weights")
    noisy = dict(state)
    noise = torch.randn(state[FAULTY].shape, generator=torch.Generator().manual_seed(1))
    noisy[FAULTY] = state[FAULTY] + 1e-2 * state[FAULTY].abs().mean() * noise
    files = {"clean": root / "clean.safetensors", "noisy": root / "noisy.safetensors"}
    save_file(state, str(files["clean"]))
    save_file(noisy, str(files["noisy"]))
    return files


@pytest.mark.parametrize("runtime", list(ENGINES))
def test_int8_runs_through_the_engines_quantiser_and_records_its_calibration(tmp_path, runtime, weights_files,
                                                                              two_images):
    if not _installed(*ENGINES[runtime]):
        pytest.skip(f"needs {', '.join(ENGINES[runtime])}")
    calibration = [str(DEFAULT_SAMPLES_DIR / "astronaut.jpg"), str(DEFAULT_SAMPLES_DIR / "coffee.jpg")]
    result = accelport.run(model=MODEL, weights=str(weights_files["clean"]), device="cpu", runtime=runtime,
                           dtype="int8", images=tuple(two_images), calibration=tuple(calibration), iters=1, warmup=0,
                           out_dir=str(tmp_path))
    summary = json.loads((tmp_path / "summary.json").read_text())
    target = summary["target"]
    assert result.passed and summary["criteria"]["precision"] == "int8"
    assert target["calibration_images"] == 2 and target["calibration_source"] == ", ".join(calibration)
    assert target["calibration_overlap"] == 0 and target["effective_precision"] == "int8"
    assert target["int8_cache_hit"] is False and target["quantizer"].startswith(("onnxruntime.", "nncf."))
    assert summary["structural_proof"]["status"] == "passed"  # the same engine in strict fp32
    assert summary["parity"]["worst_sample_rel_l2"] > 1e-3  # quantised: not fp32 in disguise
    if runtime == "openvino":  # read back from the compiled graph: its convolutions execute in int8
        assert target["compute_layers"]["int8"] > 0


def test_a_weight_fault_that_fails_fp32_fails_the_int8_run(tmp_path, weights_files, two_images):
    if not _installed(*ENGINES["onnxruntime"]):
        pytest.skip("needs onnxruntime, onnx")
    result = accelport.run(model=MODEL, weights=str(weights_files["clean"]),
                           target_weights=str(weights_files["noisy"]), device="cpu", runtime="onnxruntime",
                           dtype="int8", images=tuple(two_images[:1]), iters=1, warmup=0, out_dir=str(tmp_path))
    proof = result.summary["structural_proof"]
    assert not result.passed and proof["status"] == "failed"
    assert not proof["parity"]["passed"]  # the fault is caught at fp32 precision, whatever int8's own noise hides


def test_eager_int8_is_refused_naming_the_runtimes_that_quantise(tmp_path, capsys):
    code = main(["run", "--model", MODEL, "--device", "cpu", "--runtime", "eager", "--dtype", "int8",
                 "--out-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and "--runtime eager --dtype int8" in err and "onnxruntime" in err and "openvino" in err
    assert "Traceback" not in err and not (tmp_path / "summary.json").exists()


def test_calibration_with_a_float_dtype_is_a_usage_error(tmp_path, capsys):
    code = main(["run", "--model", MODEL, "--device", "cpu", "--dtype", "fp32", "--calibration",
                 str(DEFAULT_SAMPLES_DIR), "--out-dir", str(tmp_path)])
    assert code == 2 and "--calibration" in capsys.readouterr().err


def test_layers_refuses_int8_and_says_what_to_do(tmp_path, capsys):
    code = main(["layers", "--model", MODEL, "--device", "cpu", "--dtype", "int8", "--out-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and "module outputs do not exist" in err and "--dtype fp32" in err


def test_calibration_that_overlaps_the_judged_images_is_counted_and_warned(two_images, caplog):
    from pathlib import Path

    from accelport.runners.quantize import calibration_overlap

    judged = [Path(p) for p in two_images]
    assert calibration_overlap([str(DEFAULT_SAMPLES_DIR / "horse.png")], judged) == 0 and not caplog.records
    assert calibration_overlap([two_images[0], str(DEFAULT_SAMPLES_DIR / "horse.png")], judged) == 1
    assert "share 1 image" in caplog.text
    assert calibration_overlap([], judged) == 2  # the bundled samples serve both: counted, said at info level
