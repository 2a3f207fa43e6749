"""Activation of the simulated device: load the library, configure it, register it under its name."""

from __future__ import annotations

import logging
import os
import sys
import types

import torch

from ..errors import DeviceError
from .build import build_and_load
from .device_module import make_device_module
from .fake_torch_npu import make_torch_npu

_logger = logging.getLogger(__name__)

COUNT_ENV = "ACCELPORT_SIMULATED_DEVICE_COUNT"
KERNEL_ENV = "ACCELPORT_SIMULATED_KERNEL_US"
COPY_ENV = "ACCELPORT_SIMULATED_COPY_US_PER_MIB"
MAX_DEVICES = 8

_active: dict[str, types.ModuleType] = {}  # name -> fake torch_npu (or the device module for other names)
_settings: list = [0, 0.0, 0.0]  # device count, µs per kernel, µs per MiB copied, as configured


def is_active() -> bool:
    return bool(_active)


def _env_number(name: str, default: float, low: float, high: float, *, whole: bool = False) -> float:
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        if not text.isascii() or "_" in text:  # float() reads '٣' as 3 and '1_0' as 10
            raise ValueError
        value = float(text)
    except ValueError:
        raise DeviceError(f"{name}={text!r}: not a number (ASCII digits)") from None
    if not low <= value <= high:
        raise DeviceError(f"{name}={text!r}: must be between {low:g} and {high:g}")
    if whole and not value.is_integer():  # 1.5 devices were 1, silently
        raise DeviceError(f"{name}={text!r}: must be a whole number")
    return value


def settings_from_env() -> tuple[int, float, float]:
    """Device count, µs per kernel and µs per MiB copied from the environment (checked before any build)."""
    return (int(_env_number(COUNT_ENV, 1, 1, MAX_DEVICES, whole=True)), _env_number(KERNEL_ENV, 20.0, 0, 1e6),
            _env_number(COPY_ENV, 100.0, 0, 1e6))


def configure(device_count: int | None = None, kernel_us: float | None = None,
              copy_us_per_mib: float | None = None) -> None:
    """Set the device count and the simulated device time per kernel and per MiB copied (None: unchanged)."""
    count = device_count if device_count is not None else _settings[0]
    kernel = kernel_us if kernel_us is not None else _settings[1]
    copy = copy_us_per_mib if copy_us_per_mib is not None else _settings[2]
    torch.ops.accelport_sim.configure(int(count), int(kernel * 1000), int(copy * 1000))
    _settings[:] = [int(count), kernel, copy]


def kernel_launches() -> int:
    """Kernels and copies queued on any simulated device since the library was loaded."""
    return int(torch.ops.accelport_sim.launches())


def pending_us(device_index: int = 0) -> float:
    """Device time still queued on a device: what ``synchronize`` would wait for now."""
    return torch.ops.accelport_sim.pending_ns(device_index) / 1000.0


def activate(name: str = "npu") -> types.ModuleType:
    """Load and register the simulated device as ``name`` (idempotent); returns the fake ``torch_npu`` for npu."""
    if name in _active:
        return _active[name]
    if _active:
        raise DeviceError(f"the simulated device is already registered as {next(iter(_active))!r}, not {name!r}")
    registered = torch._C._get_privateuse1_backend_name()
    if registered not in ("privateuseone", name):
        raise DeviceError(f"cannot simulate {name!r}: PrivateUse1 is already {registered!r}")
    count, kernel_us, copy_us = settings_from_env()
    build_and_load()
    configure(count, kernel_us, copy_us)
    torch.utils.rename_privateuse1_backend(name)
    device_module = make_device_module(name, lambda: _settings[0])
    torch._register_device_module(name, device_module)
    torch.utils.generate_methods_for_privateuse1_backend(for_storage=True)
    if name == "npu":
        module = make_torch_npu(device_module)
        sys.modules["torch_npu"] = module
        _register_hccl_as_gloo()
    else:
        module = device_module
    _active[name] = module
    _logger.warning("using the SIMULATED %s device (%d device(s), %g us per kernel, %g us per MiB copied): a "
                    "testing aid, not hardware", name, count, kernel_us, copy_us)
    return module


def _register_hccl_as_gloo() -> None:
    """``init_process_group("hccl")`` as on Ascend, served by gloo: the simulated device has no collectives."""
    import torch.distributed as dist

    if not dist.is_available() or "hccl" in dist.Backend.backend_list:
        return

    def create_gloo(store, rank, size, timeout):  # the non-extended creator signature
        return dist.ProcessGroupGloo(store, rank, size, timeout)

    dist.Backend.register_backend("hccl", create_gloo, devices=["npu"])
