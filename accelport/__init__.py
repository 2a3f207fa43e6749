"""accelport: run a vision model on an accelerator with real weights, prove parity with the CPU, time it."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .errors import AccelportError, DeviceError, InputError, RuntimeUnavailableError, UsageError, WeightsError

if TYPE_CHECKING:
    from .main_job.api import RunResult, run
    from .main_job.config import RunConfig

# Loaded on first use (PEP 562): importing the package, as ``python -m accelport`` and the ``accelport`` script do
# before anything else, must not import torch, so that a Ctrl-C in the first seconds is handled by the CLI
_LAZY = {"run": "accelport.main_job.api", "RunResult": "accelport.main_job.api",
         "RunConfig": "accelport.main_job.config"}

__all__ = [
    "AccelportError", "DeviceError", "InputError", "RunConfig", "RunResult", "RuntimeUnavailableError",
    "UsageError", "WeightsError", "run",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'accelport' has no attribute {name!r}")
