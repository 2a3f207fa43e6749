"""Peak memory of one benchmark configuration, measured per configuration rather than per process.

CPU: the process's peak resident set size (``VmHWM``), which Linux lets a process reset by writing ``5`` to
``/proc/self/clear_refs``; so each configuration's peak is its own, not the high-water mark of every earlier
one (``resource.getrusage`` cannot be reset). The figure is the whole process: Python, torch, the model
and the reference outputs are in it too, so ``rss_before_mb`` is recorded beside it. Where the reset is not
possible (not Linux), the peak is flagged ``resettable: false`` and is a process-lifetime high-water mark.

Accelerators: torch's allocator peak (``max_memory_allocated`` after ``reset_peak_memory_stats``); memory an
engine allocates outside torch (ONNX Runtime's CUDA arena) is not in it, which the record says.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from ..process_memory import reset_peak_rss, status_kib

_logger = logging.getLogger(__name__)


def _device_module(device: torch.device) -> Any | None:
    module = getattr(torch, device.type, None)
    return module if module is not None and hasattr(module, "max_memory_allocated") else None


class PeakMemory:
    """``start()`` before a configuration runs, ``stop()`` after: a dict describing its peak memory."""

    def __init__(self, device: torch.device):
        self.device = device
        self._rss_before_kb: int | None = None
        self._resettable = False

    def start(self) -> None:
        self._resettable = reset_peak_rss()  # first: it hands back the memory the allocator kept
        self._rss_before_kb = status_kib("VmRSS")
        module = _device_module(self.device)
        if module is not None and self.device.type != "cpu":
            module.reset_peak_memory_stats(self.device)

    def stop(self) -> dict[str, Any]:
        peak_kb = status_kib("VmHWM")
        record: dict[str, Any] = {
            "kind": "process_peak_rss",
            "peak_mb": round(peak_kb / 1024, 1) if peak_kb is not None else None,
            "rss_before_mb": round(self._rss_before_kb / 1024, 1) if self._rss_before_kb is not None else None,
            "resettable": self._resettable,
        }
        module = _device_module(self.device)
        if module is not None and self.device.type != "cpu":
            record["device_kind"] = "torch_allocator_peak (engines allocating outside torch are not included)"
            record["device_peak_mb"] = round(module.max_memory_allocated(self.device) / 2**20, 1)
        return record
