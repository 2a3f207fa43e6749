"""Peak memory of a layer comparison: what it holds itself (counted exactly) and what the process used (measured).

The process peak is Linux's VmHWM after resetting it through ``/proc/self/clear_refs`` at the start, so it
covers this comparison only; elsewhere it falls back to ``ru_maxrss``, the peak since the process started.
"""

from __future__ import annotations

import logging
import resource
import sys
import threading
from dataclasses import asdict, dataclass
from typing import Any

import torch

from ..process_memory import reset_peak_rss, status_kib

_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class MemoryReport:
    """Bytes; ``None`` where not measurable on this platform or device."""

    batch_size: int  # the largest batch compared
    held_activations_peak_bytes: int  # most bytes of activations this comparison held at once (its own copies)
    largest_module_output_bytes: int  # one module output of one batch, fp32
    all_module_outputs_bytes: int  # every watched module output of one side for one batch, fp32 (not held)
    process_rss_before_bytes: int | None
    process_rss_peak_bytes: int | None
    process_rss_peak_method: str  # "VmHWM reset at start" or "ru_maxrss since process start"
    device_peak_allocated_bytes: int | None  # accelerator targets only

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class MemoryMonitor:
    """Counts held activation bytes (thread-safe: the chained target runs in a thread) and measures peaks."""

    def __init__(self, device: torch.device) -> None:
        self._device, self._batch_size = device, 0
        self._lock = threading.Lock()
        self._held = self._held_peak = self._largest = self._pass_bytes = self._pass_peak = 0
        self._rss_before: int | None = None
        self._hwm_reset = False

    def start(self) -> MemoryMonitor:
        self._hwm_reset = reset_peak_rss()
        rss = status_kib("VmRSS")
        self._rss_before = rss * 1024 if rss is not None else None
        if self._device.type != "cpu":
            try:
                torch.accelerator.reset_peak_memory_stats(self._device)
            except Exception as exc:  # not every backend implements the generic memory API
                _logger.debug("cannot reset peak memory of %s: %r", self._device, exc)
        return self

    def hold(self, nbytes: int) -> None:
        with self._lock:
            self._held += nbytes
            self._held_peak = max(self._held_peak, self._held)

    def release(self, nbytes: int) -> None:
        with self._lock:
            self._held -= nbytes

    def output_seen(self, nbytes: int) -> None:
        """One reference module output of the current pass (what keeping them all would have cost)."""
        self._largest = max(self._largest, nbytes)
        self._pass_bytes += nbytes
        self._pass_peak = max(self._pass_peak, self._pass_bytes)

    def pass_started(self, batch_size: int) -> None:
        self._batch_size = max(self._batch_size, batch_size)
        self._pass_bytes = 0

    def report(self) -> MemoryReport:
        if self._hwm_reset:
            peak, method = status_kib("VmHWM"), "VmHWM reset at start"
            peak = peak * 1024 if peak is not None else None
        else:
            usage = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            peak, method = usage * (1 if sys.platform == "darwin" else 1024), "ru_maxrss since process start"
        device_peak = None
        if self._device.type != "cpu":
            try:
                device_peak = int(torch.accelerator.max_memory_allocated(self._device))
            except Exception as exc:
                _logger.debug("cannot read peak memory of %s: %r", self._device, exc)
        return MemoryReport(
            batch_size=self._batch_size,
            held_activations_peak_bytes=self._held_peak,
            largest_module_output_bytes=self._largest,
            all_module_outputs_bytes=self._pass_peak,
            process_rss_before_bytes=self._rss_before,
            process_rss_peak_bytes=peak,
            process_rss_peak_method=method,
            device_peak_allocated_bytes=device_peak,
        )
