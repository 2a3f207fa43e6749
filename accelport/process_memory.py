"""This process's resident memory as Linux reports it, with a peak that can be reset per measurement.

``VmRSS`` (now) and ``VmHWM`` (the peak) come from ``/proc/self/status``. Writing ``5`` to
``/proc/self/clear_refs`` resets ``VmHWM`` to the current RSS, so a bench configuration or a layer comparison
gets a peak of its own instead of the high-water mark of everything before it (``resource.getrusage`` cannot be
reset). Elsewhere (not Linux) every reading is None and the reset reports False, for callers to say so.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from .allocator import release_free_memory

_logger = logging.getLogger(__name__)

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def status_kib(field: str) -> int | None:
    """A ``kB`` field of ``/proc/self/status`` (``VmRSS``, ``VmHWM``); None where it cannot be read."""
    try:
        match = re.search(rf"^{field}:\s+(\d+)\s+kB", _STATUS.read_text(), re.MULTILINE)
    except OSError:
        return None
    return int(match.group(1)) if match else None


def reset_peak_rss() -> bool:
    """Reset the process's high-water mark (VmHWM) to its current RSS; False where the kernel does not allow it.

    Memory the allocator keeps for reuse (accelport/allocator.py) is handed back first, else an earlier
    configuration's freed buffers would stay in every later configuration's RSS and peak."""
    release_free_memory()
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return status_kib("VmHWM") is not None
