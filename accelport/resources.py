"""Up-front checks that a request fits the machine, so an absurd flag is a clear error, not a MemoryError later."""

from __future__ import annotations

import logging
import math
from pathlib import Path

from .errors import UsageError

_logger = logging.getLogger(__name__)

# A batch of inputs lives several times at once: the decoded images before stacking, the stacked batch, the
# timed batch and the runtime's own copy. Activations come on top, so this is a lower bound of the need.
INPUT_COPIES = 4


def available_memory_bytes() -> int | None:
    """Memory this process can still take: MemAvailable, capped by a cgroup v2 limit; None when unknown."""
    available = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            used = int(Path("/sys/fs/cgroup/memory.current").read_text())
            room = int(limit) - used
            available = room if available is None else min(available, room)
    except (OSError, ValueError):
        pass
    return available


def check_batch_fits(batch_size: int, input_size: tuple[int, ...] | list[int], flag: str = "--batch-size") -> None:
    """Refuse a batch whose float32 inputs alone (held ``INPUT_COPIES`` times) exceed the available memory."""
    need = INPUT_COPIES * batch_size * math.prod(input_size) * 4
    available = available_memory_bytes()
    if available is not None and need > available:
        raise UsageError(f"{flag} {batch_size}: its inputs alone need about {need / 2**30:.1f} GiB "
                         f"({INPUT_COPIES} copies of {batch_size} x {' x '.join(map(str, input_size))} float32), "
                         f"more than the {available / 2**30:.1f} GiB of memory available; use a smaller batch")
