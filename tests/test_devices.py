from __future__ import annotations

import sys

import pytest
import torch

from accelport.devices import apply_numeric_settings, available_devices, resolve_device
from accelport.errors import DeviceError, UsageError

HAS_CUDA = torch.cuda.is_available()


def test_cpu_and_auto_resolve():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("CPU") == torch.device("cpu")
    auto = resolve_device("auto")
    assert auto.type == available_devices()[0]
    if available_devices() == ["cpu"]:
        assert auto == torch.device("cpu")


@pytest.mark.skipif(HAS_CUDA, reason="needs a machine without CUDA")
def test_absent_cuda_is_a_clear_error():
    with pytest.raises(DeviceError, match=r"--device 'cuda:1': no cuda device is available.*available: .*cpu"):
        resolve_device("cuda:1")


def test_absent_npu_mentions_torch_npu():
    pytest.importorskip("torch")
    if "npu" in available_devices():
        pytest.skip("an NPU is present")
    with pytest.raises(DeviceError, match="torch_npu"):
        resolve_device("npu")


@pytest.mark.parametrize("spec, message", [("tpu", "unknown device type"), ("cuda:x", "non-negative integer"),
                                           ("cuda:-1", "non-negative integer"),
                                           ("npu:", "non-negative integer"),  # pinned every torchrun rank to npu:0
                                           ("cpu:", "non-negative integer"),
                                           ("cpu:\u00b2", "non-negative integer"),  # int() raised: exit 3
                                           ("npu:\u0660", "non-negative integer")])  # an Arabic-Indic 0: was npu:0
def test_malformed_device_is_a_usage_error(spec, message):
    with pytest.raises(UsageError, match=message):
        resolve_device(spec)


def test_fp32_math_switch_sets_and_records_tf32_flags():
    strict = apply_numeric_settings(torch.device("cpu"), "strict")
    assert strict.effective["cuda_matmul_allow_tf32"] is False and strict.effective["cudnn_allow_tf32"] is False
    assert torch.backends.cuda.matmul.allow_tf32 is False
    fast = apply_numeric_settings(torch.device("cpu"), "fast")
    assert fast.effective["cuda_matmul_allow_tf32"] is True and fast.effective["cudnn_allow_tf32"] is True
    # the CPU reference must stay IEEE fp32 even in fast mode
    assert fast.effective.get("cpu_onednn_matmul_fp32_precision", "none") in ("none", "ieee")
    with pytest.raises(UsageError, match="--fp32-math 'medium'"):
        apply_numeric_settings(torch.device("cpu"), "medium")


@pytest.mark.device
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")
def test_cuda_device_resolves_and_reports_name():
    from accelport.devices import device_name

    device = resolve_device("cuda:0")
    assert device == torch.device("cuda", 0)
    assert device_name(device) == torch.cuda.get_device_name(0)


def test_the_one_cpu_device_is_cpu_or_cpu_0_and_no_other_index():
    assert resolve_device("cpu:0") == resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(DeviceError, match="torch has one CPU device"):
        resolve_device("cpu:7")  # accepted as if it existed, and recorded as asked


def test_the_callers_ascend_flags_are_restored_after_a_job(monkeypatch):
    """TF32 was restored after ``accelport.run``, Ascend's HF32 and private-format flags were not: an Ascend user
    calling it inside a job kept conv HF32 and private formats off."""
    from types import ModuleType, SimpleNamespace

    from accelport.devices import caller_torch_state

    npu = SimpleNamespace(conv=SimpleNamespace(allow_hf32=True), matmul=SimpleNamespace(allow_hf32=False),
                          config=SimpleNamespace(allow_internal_format=True))
    torch_npu = ModuleType("torch_npu")
    torch_npu.npu = npu  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "torch_npu", torch_npu)

    @caller_torch_state()
    def job():
        npu.conv.allow_hf32 = npu.matmul.allow_hf32 = npu.config.allow_internal_format = False

    job()
    assert (npu.conv.allow_hf32, npu.matmul.allow_hf32, npu.config.allow_internal_format) == (True, False, True)
