"""Device discovery, selection and numeric settings, through torch's device-generic APIs.

``torch.accelerator`` covers CUDA, XPU, MPS and out-of-tree backends such as Ascend's ``torch_npu``
(registered as PrivateUse1 under the name ``npu``); vendor modules are touched only where a setting
has no generic equivalent (TF32 on CUDA, HF32 and binary kernels on Ascend).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import logging
import os
import platform
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from .errors import DeviceError, UsageError
from .typed_numbers import whole_number

_logger = logging.getLogger(__name__)

# Order in which ``--device auto`` looks for an accelerator.
AUTO_ORDER = ("npu", "cuda", "xpu", "mps")
KNOWN_TYPES = ("cpu",) + AUTO_ORDER
FP32_MATH_MODES = ("strict", "fast")
# Device types whose host batches are pinned (page-locked), so host-to-device copies can run asynchronously.
PINNED_DEVICE_TYPES = ("cuda", "npu", "xpu")
# Testing aid (docs/simulated_device.md): "npu" puts accelport's simulated Ascend device and a fake torch_npu
# in place of the real ones, so the whole NPU code path runs on a CPU-only machine.
SIMULATED_DEVICE_ENV = "ACCELPORT_SIMULATED_DEVICE"


def _simulated_device() -> str:
    """``ACCELPORT_SIMULATED_DEVICE`` ("" when unset); any value but npu is an error, and so is a bad count or
    device time for it, whatever --device is (with --device cpu, ACCELPORT_SIMULATED_DEVICE_COUNT=0 was taken)."""
    simulated = os.environ.get(SIMULATED_DEVICE_ENV, "").strip().lower()
    if simulated and simulated != "npu":
        raise DeviceError(f"{SIMULATED_DEVICE_ENV}={simulated!r}: the only simulated device is 'npu'")
    if simulated:
        from .simdevice.backend import settings_from_env

        settings_from_env()
    return simulated


def import_torch_npu() -> Any | None:
    """Import ``torch_npu`` when it is installed (it registers the ``npu`` device); else return None."""
    if _simulated_device():
        from .simdevice import activate

        return activate("npu")
    if importlib.util.find_spec("torch_npu") is None:
        return None
    try:
        return importlib.import_module("torch_npu")
    except Exception as exc:  # a broken CANN install must not break CPU/CUDA users
        _logger.warning("torch_npu is installed but failed to import (%s); Ascend NPUs are unavailable", exc)
        return None


def _device_count(device_type: str) -> int:
    """How many devices of this type are visible (0 when the backend is absent)."""
    if device_type == "cpu":
        return 1
    if device_type == "npu" and import_torch_npu() is None:
        return 0
    accelerator = torch.accelerator.current_accelerator() if torch.accelerator.is_available() else None
    if accelerator is not None and accelerator.type == device_type:
        return torch.accelerator.device_count()
    module = getattr(torch, device_type, None)  # e.g. torch.mps when another accelerator is current
    if module is not None and getattr(module, "is_available", lambda: False)():
        return int(getattr(module, "device_count", lambda: 1)())
    return 0


def available_devices() -> list[str]:
    """Device types with at least one visible device, in ``auto`` preference order, CPU last."""
    return [t for t in AUTO_ORDER if _device_count(t) > 0] + ["cpu"]


def resolve_device(spec: str) -> torch.device:
    """Turn ``auto|cpu|cuda[:i]|npu[:i]|xpu[:i]|mps`` into a present ``torch.device`` or raise DeviceError."""
    _simulated_device()  # a misspelt value was ignored with --device cpu (docs: an error)
    spec = spec.strip().lower()
    if spec == "auto":
        chosen = torch.device(available_devices()[0])
        if chosen.type != "cpu":
            chosen = torch.device(chosen.type, 0)
        _logger.info("--device auto selected %s", chosen)
        return chosen
    device_type, colon, index_text = spec.partition(":")
    if device_type not in KNOWN_TYPES:
        raise UsageError(f"--device {spec!r}: unknown device type; choose one of auto, {', '.join(KNOWN_TYPES)}")
    # "npu:" pinned every torchrun rank; str.isdigit also takes "²" (int() then raised) and "٠" (read as 0)
    if (colon and not index_text) or (index_text and whole_number(index_text) is None):
        raise UsageError(f"--device {spec!r}: the index after ':' must be a non-negative integer")
    count = _device_count(device_type)
    if count == 0:
        hint = (" (is torch_npu installed, the wheel matching your CANN toolkit, with CANN's set_env.sh sourced? "
                "Without an NPU, ACCELPORT_SIMULATED_DEVICE=npu simulates one: docs/simulated_device.md)"
                if device_type == "npu" else "")
        raise DeviceError(
            f"--device {spec!r}: no {device_type} device is available on this machine{hint}; "
            f"available: {', '.join(available_devices())}"
        )
    if device_type == "cpu":  # torch has one CPU device: cpu:0 is it, cpu:7 was accepted as if it existed
        if index_text and int(index_text) != 0:
            raise DeviceError(f"--device {spec!r}: torch has one CPU device (cpu or cpu:0); pin CPU cores with "
                              "taskset or --threads instead")
        return torch.device("cpu")
    index = int(index_text) if index_text else 0
    if index >= count:
        raise DeviceError(f"--device {spec!r}: only {count} {device_type} device(s) visible (indices 0..{count - 1})")
    return torch.device(device_type, index)


def device_name(device: torch.device) -> str:
    """A human name for the hardware behind ``device`` (GPU/NPU product name, or the CPU model)."""
    if device.type == "cpu":
        return cpu_name()
    module = getattr(torch, device.type, None)
    get_name = getattr(module, "get_device_name", None)
    if get_name is not None:
        try:
            return str(get_name(device.index or 0))
        except Exception:  # names are informative only
            pass
    return device.type


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def synchronize(device: torch.device) -> None:
    """Wait for all queued work on ``device``: the timer calls this on every backend, not only CUDA."""
    if device.type == "cpu":
        return
    current = torch.accelerator.current_accelerator() if torch.accelerator.is_available() else None
    if current is not None and current.type == device.type:
        torch.accelerator.synchronize(device)
        return
    module = getattr(torch, device.type, None)
    if module is not None and hasattr(module, "synchronize"):
        module.synchronize()


@dataclass(frozen=True)
class NumericSettings:
    """What was applied for ``--fp32-math`` and the device, read back from the backends after applying."""

    fp32_math: str
    effective: dict[str, Any] = field(default_factory=dict)


@contextlib.contextmanager
def caller_torch_state() -> Iterator[None]:
    """The torch settings a job changes, restored for the caller afterwards (a decorator on every API entry): the
    TF32 flags ``--fp32-math`` sets, the global random generator the seeded init reseeds, the thread count. A
    Python user's own numerics and seeds were left changed by ``accelport.run``. Ascend's HF32 and private-format
    flags too, where the caller had imported torch_npu before (its JIT compile mode has no getter: not restored)."""
    rng, threads = torch.get_rng_state(), torch.get_num_threads()
    tf32 = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    ascend = _ascend_flags()
    try:
        yield
    finally:
        torch.set_rng_state(rng)
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
        if ascend is not None:
            npu = sys.modules["torch_npu"].npu
            npu.conv.allow_hf32, npu.matmul.allow_hf32, npu.config.allow_internal_format = ascend


def _ascend_flags() -> tuple[Any, Any, Any] | None:
    """The flags ``_apply_ascend_settings`` sets, read from a torch_npu already imported (None: none is)."""
    npu = getattr(sys.modules.get("torch_npu"), "npu", None)
    try:
        return npu.conv.allow_hf32, npu.matmul.allow_hf32, npu.config.allow_internal_format  # type: ignore[union-attr]
    except AttributeError:
        return None


def apply_numeric_settings(device: torch.device, fp32_math: str) -> NumericSettings:
    """Apply ``--fp32-math`` on every backend, plus Ascend's inference settings, and record the result.

    ``strict`` keeps fp32 as IEEE fp32: TF32 off on CUDA (cuBLAS and cuDNN), HF32 off on Ascend (conv and
    matmul). ``fast`` allows TF32/HF32, the reduced-mantissa paths that explain most "fp32" error on
    accelerators. The CPU reference always runs IEEE fp32: torch's CPU kernels are not affected by these.
    """
    if fp32_math not in FP32_MATH_MODES:
        raise UsageError(f"--fp32-math {fp32_math!r}: choose one of {', '.join(FP32_MATH_MODES)}")
    fast = fp32_math == "fast"
    if fast and device.type == "cpu":  # issue 11: say plainly that nothing fast happens here
        _logger.warning("--fp32-math fast: no effect on a CPU target (torch's CPU kernels stay IEEE fp32); judged by "
                        "the strict fp32 criteria")
    torch.backends.cuda.matmul.allow_tf32 = fast
    torch.backends.cudnn.allow_tf32 = fast
    # Deliberately not torch.set_float32_matmul_precision("high"): it also switches oneDNN's CPU matmuls
    # to TF32/bf16 and would lower the precision of the CPU reference itself.
    effective: dict[str, Any] = {
        "cuda_matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
    }
    mkldnn_matmul = getattr(torch.backends.mkldnn, "matmul", None)  # fp32_precision API, torch >= 2.9
    if mkldnn_matmul is not None and hasattr(mkldnn_matmul, "fp32_precision"):
        effective["cpu_onednn_matmul_fp32_precision"] = mkldnn_matmul.fp32_precision
    if device.type == "npu":
        effective.update(_apply_ascend_settings(fast))
    return NumericSettings(fp32_math=fp32_math, effective=effective)


def _apply_ascend_settings(fast: bool) -> dict[str, Any]:
    """Binary kernels, no private formats, and HF32 per ``--fp32-math``: the usual Ascend inference settings."""
    torch_npu = import_torch_npu()
    if torch_npu is None:
        raise DeviceError("--device npu: torch_npu could not be imported")
    npu = torch_npu.npu
    npu.set_compile_mode(jit_compile=False)
    npu.config.allow_internal_format = False
    npu.conv.allow_hf32 = fast
    npu.matmul.allow_hf32 = fast
    return {
        "npu_jit_compile": False,
        "npu_allow_internal_format": bool(npu.config.allow_internal_format),
        "npu_conv_allow_hf32": bool(npu.conv.allow_hf32),
        "npu_matmul_allow_hf32": bool(npu.matmul.allow_hf32),
    }
