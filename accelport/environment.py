"""The software and hardware a result was measured on, for every artifact."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import sys
from typing import Any

import torch

from .devices import cpu_name, device_name


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def describe_environment(device: torch.device) -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torchvision": _version("torchvision"),
        "timm": _version("timm"),
        "torch_npu": _version("torch_npu"),
        "numpy": _version("numpy"),
        "safetensors": _version("safetensors"),
        "huggingface_hub": _version("huggingface_hub"),
        "accelport": _version("accelport"),
        "device": str(device),
        "device_name": device_name(device),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "executable": sys.executable,
    }
