"""The importable API: accelport.run(...) against an independent timm computation, other models, Ascend settings."""

from __future__ import annotations

import json
import sys
import types

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import save_file

import accelport
from accelport.devices import apply_numeric_settings


def test_api_reference_equals_plain_timm_on_the_same_checkpoint(tmp_path, checkpoint_files, seeded_state, two_images):
    result = accelport.run(weights=str(checkpoint_files["original"]), device="cpu", images=tuple(two_images),
                           out_dir=str(tmp_path), iters=2, warmup=0)
    assert isinstance(result, accelport.RunResult) and result.passed
    model = timm.create_model("convnextv2_atto", pretrained=False)
    model.load_state_dict(seeded_state)
    config = timm.data.resolve_data_config(model=model)
    transform = timm.data.create_transform(**config)
    batch = torch.stack([transform(Image.open(p).convert("RGB")) for p in two_images])
    with torch.no_grad():
        expected = model.eval()(batch).numpy()
    np.testing.assert_allclose(result.reference, expected, rtol=0, atol=1e-5)
    assert result.summary["weights"]["key_layout"] == "converted"
    assert set(result.artifacts) == {"summary", "log", "report"}


def test_batches_do_not_change_the_outputs(tmp_path, checkpoint_files, sample_paths):
    common = dict(weights=str(checkpoint_files["safetensors"]), device="cpu", iters=1, warmup=0)
    single = accelport.run(out_dir=str(tmp_path / "b1"), batch_size=1, **common)
    batched = accelport.run(out_dir=str(tmp_path / "b4"), batch_size=4, channels_last=True, **common)
    assert batched.summary["latency"]["compute"]["batch_size"] == 4
    assert batched.summary["target"]["channels_last"] is True
    np.testing.assert_allclose(single.reference, batched.target, rtol=1e-4, atol=1e-4)
    assert batched.passed


def test_another_timm_architecture_runs_with_its_own_preprocessing(tmp_path, two_images):
    torch.manual_seed(7)
    vit = timm.create_model("test_vit", pretrained=False)
    weights = tmp_path / "test_vit.safetensors"
    save_file({k: v.contiguous() for k, v in vit.state_dict().items()}, str(weights))
    result = accelport.run(model="test_vit", weights=str(weights), device="cpu", images=tuple(two_images),
                           out_dir=str(tmp_path / "out"), iters=2, warmup=0)
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    expected_size = list(timm.data.resolve_model_data_config(vit)["input_size"])
    assert result.passed and summary["model"]["name"] == "test_vit"
    assert summary["model"]["data_config"]["input_size"] == expected_size
    assert summary["output_shape"] == [2, vit.num_classes]
    assert summary["pretrained_used"] is True


def test_a_nearly_black_16_bit_image_is_noted_in_the_summary_and_reports_not_only_the_log(tmp_path, two_images):
    """8-bit values saved as a 16-bit PNG decode nearly black: the warning was in the log alone, and report.md showed
    a PASS on what read as the user's picture."""
    dark = tmp_path / "dark16.png"
    Image.fromarray(np.full((48, 64), 128, np.uint16)).save(dark)
    accelport.run(model="test_vit", device="cpu", images=(two_images[0], str(dark)), out_dir=str(tmp_path / "out"),
                  iters=1, warmup=0)
    notes = json.loads((tmp_path / "out" / "summary.json").read_text())["inputs"]["notes"]
    assert [n["path"] for n in notes] == [str(dark)] and "reach only 128 of 65535" in notes[0]["note"]
    for name in ("report.md", "accuracy_compare.log"):
        text = (tmp_path / "out" / name).read_text()
        assert "1 image(s) compared as decoded, with a note:" in text and f"{dark}: a 16-bit grey image" in text


def test_unknown_override_is_a_type_error():
    with pytest.raises(TypeError):
        accelport.run(not_a_field=1)


def test_ascend_settings_are_applied_and_read_back(monkeypatch):
    """With torch_npu present, --fp32-math drives both HF32 switches; binary kernels and no private formats."""
    calls = {}
    npu = types.SimpleNamespace(
        set_compile_mode=lambda jit_compile: calls.update(jit_compile=jit_compile),
        config=types.SimpleNamespace(allow_internal_format=True),
        conv=types.SimpleNamespace(allow_hf32=True),  # Ascend's default
        matmul=types.SimpleNamespace(allow_hf32=False),
    )
    monkeypatch.setitem(sys.modules, "torch_npu", types.SimpleNamespace(npu=npu))
    monkeypatch.setattr("accelport.devices.import_torch_npu", lambda: sys.modules["torch_npu"])
    npu_device = types.SimpleNamespace(type="npu", index=0)  # torch.device("npu") needs the real torch_npu
    strict = apply_numeric_settings(npu_device, "strict")
    assert calls == {"jit_compile": False}
    assert strict.effective["npu_conv_allow_hf32"] is False and strict.effective["npu_matmul_allow_hf32"] is False
    assert strict.effective["npu_allow_internal_format"] is False
    fast = apply_numeric_settings(npu_device, "fast")
    assert fast.effective["npu_conv_allow_hf32"] is True and fast.effective["npu_matmul_allow_hf32"] is True


def test_fast_fp32_math_on_a_cpu_target_is_strict_fp32_without_a_baseline(tmp_path, two_images):
    """torch's CPU kernels ignore TF32 switches: no TF32-emulated baseline, no ratio rule, the strict criteria."""
    torch.manual_seed(7)
    result = accelport.run(model="test_vit", device="cpu", fp32_math="fast", images=tuple(two_images[:1]),
                           out_dir=str(tmp_path), iters=1, warmup=0)
    parity = result.summary["parity"]
    assert result.passed and result.summary["target"]["precision"] == "fp32" and "baseline" not in parity
    assert parity["criteria"]["precision"] == "fp32"
    assert not any("baseline" in check["name"] for check in parity["checks"])
