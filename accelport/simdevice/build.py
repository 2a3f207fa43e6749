"""Compile and load the simulated device's C++ backend, once per source and torch version.

The library is built with ``torch.utils.cpp_extension.load`` (g++ and ninja) into
``<accelport cache>/simdevice/torch-<version>-<source sha>``, so a second process only loads it. It has no
Python bindings: its controls are custom ops under ``torch.ops.accelport_sim``, which keeps the build short.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import torch

from ..cache_home import default_cache_dir
from ..errors import DeviceError

_logger = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("backend.cpp")
# Testing aid: build this C++ file instead of the bundled one (e.g. a broken one, to test the error path).
SOURCE_ENV = "ACCELPORT_SIMULATED_DEVICE_SOURCE"


def source_path() -> Path:
    return Path(os.environ.get(SOURCE_ENV) or SOURCE)


def build_directory(source: Path) -> Path:
    digest = hashlib.sha256(source.read_bytes()).hexdigest()[:16]
    return default_cache_dir() / "simdevice" / f"torch-{torch.__version__}-{digest}"


def build_and_load() -> Path:
    """Build (or reuse) the backend library and load it into this process; DeviceError when it cannot."""
    source = source_path()
    if not source.is_file():
        raise DeviceError(f"{SOURCE_ENV}={source}: no such C++ source file")
    directory = build_directory(source)
    directory.mkdir(parents=True, exist_ok=True)
    cpp_logger = logging.getLogger("torch.utils.cpp_extension")
    saved_level = cpp_logger.level
    cpp_logger.setLevel(logging.ERROR)  # its "No CUDA runtime is found" warning says nothing about this build
    try:
        from torch.utils import cpp_extension
    finally:
        cpp_logger.setLevel(saved_level)

    _logger.info("simulated device: building/loading %s in %s", source.name, directory)
    try:
        return Path(cpp_extension.load(
            name=f"accelport_simdevice_{directory.name.rsplit('-', 1)[1]}",
            sources=[str(source)],
            build_directory=str(directory),
            extra_cflags=["-O1"],
            is_python_module=False,
            verbose=False,
        ))
    except (RuntimeError, OSError, ImportError) as exc:
        raise DeviceError(f"the simulated device ({source}) failed to build: {first_error_line(str(exc))}") from None


def first_error_line(message: str) -> str:
    """The compiler's first ``error:`` line (or the message's last line): what a user needs to see."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    for line in lines:
        if "error:" in line.lower():
            return line
    return lines[-1] if lines else "unknown error"
