"""The ``torch.<name>`` module of the simulated device (``torch.npu``), as ``torch_npu`` provides on Ascend.

Everything delegates to the device-generic ``torch.accelerator`` API, which the C++ backend implements, so
these functions prove nothing on their own: they exist because accelport (and torch) look them up by name.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any

import torch

DEVICE_NAME = "accelport simulated NPU"


def _index(device: Any = None) -> int:
    if device is None:
        return torch.accelerator.current_device_index()
    if isinstance(device, int):
        return device
    device = torch.device(device)
    return torch.accelerator.current_device_index() if device.index is None else device.index


def make_device_module(name: str, device_count: Callable[[], int]) -> types.ModuleType:
    """A fresh module with the functions torch and accelport call on ``torch.<name>``.

    ``device_count`` comes from the backend's configuration: ``torch.accelerator.device_count`` itself
    delegates to this module, so it cannot be used here.
    """
    module = types.ModuleType(f"torch.{name}")
    module.__dict__.update(
        is_available=lambda: True,
        is_initialized=lambda: True,
        _is_in_bad_fork=lambda: False,
        device_count=device_count,
        current_device=torch.accelerator.current_device_index,
        set_device=lambda device: torch.accelerator.set_device_index(_index(device)),
        synchronize=lambda device=None: torch.accelerator.synchronize(_index(device)),
        get_device_name=lambda device=None: f"{DEVICE_NAME} {_index(device)}",
        memory_allocated=lambda device=None: torch.accelerator.memory_allocated(_index(device)),
        max_memory_allocated=lambda device=None: torch.accelerator.max_memory_allocated(_index(device)),
        reset_peak_memory_stats=lambda device=None: torch.accelerator.reset_peak_memory_stats(_index(device)),
        # torch.autocast asks a PrivateUse1 backend for this even with enabled=False (timm's EfficientViT does
        # that); torch_npu answers fp16 and bf16.
        get_amp_supported_dtype=lambda: [torch.float16, torch.bfloat16],
        manual_seed=lambda seed: None,  # kernels run on the CPU: the CPU generator is the one that counts
        manual_seed_all=lambda seed: None,
    )
    return module
