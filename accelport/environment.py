"""The software and hardware a result was measured on, for every artifact."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import sys
from typing import Any

import torch

from .devices import cpu_name, device_name


def package_version(package: str) -> str | None:
    """Installed version of ``package``, or None when it is not installed."""
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def describe_environment(device: torch.device) -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torchvision": package_version("torchvision"),
        "timm": package_version("timm"),
        "torch_npu": package_version("torch_npu"),
        "numpy": package_version("numpy"),
        "safetensors": package_version("safetensors"),
        "huggingface_hub": package_version("huggingface_hub"),
        "accelport": package_version("accelport"),
        "device": str(device),
        "device_name": device_name(device),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "executable": sys.executable,
    }
