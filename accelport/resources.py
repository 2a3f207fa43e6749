"""Up-front checks that a request fits the machine, so an absurd flag is a clear error, not a MemoryError later."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import torch

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


# Eager inference holds a layer's input, its output and a temporary at once: the largest layer output of one image,
# this many times, is a lower bound of the activations per image (resnet18 at 224 px: 3 x 3.2 MB, ~10 MB measured).
ACTIVATION_COPIES = 3
ACTIVATION_CHECK_FROM = 32  # batch sizes from which one image is run through the model to size its activations


def largest_activation_bytes(model: torch.nn.Module, input_size: tuple[int, ...] | list[int]) -> int:
    """The largest leaf module output of one image through ``model`` (CPU, fp32), in bytes."""
    largest = 0

    def hook(_module: torch.nn.Module, _inputs: Any, output: Any) -> None:
        nonlocal largest
        if isinstance(output, torch.Tensor):
            largest = max(largest, output.numel() * output.element_size())

    leaves = [m for m in model.modules() if not any(True for _ in m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    try:
        with torch.inference_mode():
            model(torch.zeros(1, *input_size))
    finally:
        for handle in handles:
            handle.remove()
    return largest


def check_batch_fits(batch_size: int, input_size: tuple[int, ...] | list[int], flag: str = "--batch-size",
                     model: torch.nn.Module | None = None) -> None:
    """Refuse a batch whose float32 inputs (held ``INPUT_COPIES`` times) and, with ``model`` and a batch of at
    least ``ACTIVATION_CHECK_FROM``, its activations (a lower bound from one image) exceed the available memory:
    inputs alone let a batch of 3000 through, which the kernel's OOM killer then stopped (exit 137, nothing written)."""
    inputs = INPUT_COPIES * batch_size * math.prod(input_size) * 4
    available = available_memory_bytes()
    if available is None:
        return
    if inputs > available:
        raise UsageError(f"{flag} {batch_size}: its inputs alone need about {inputs / 2**30:.1f} GiB "
                         f"({INPUT_COPIES} copies of {batch_size} x {' x '.join(map(str, input_size))} float32), "
                         f"more than the {available / 2**30:.1f} GiB of memory available; use a smaller batch")
    if model is None or batch_size < ACTIVATION_CHECK_FROM:
        return
    activations = ACTIVATION_COPIES * batch_size * largest_activation_bytes(model, input_size)
    if inputs + activations > available:
        raise UsageError(f"{flag} {batch_size}: its inputs and activations need at least "
                         f"{(inputs + activations) / 2**30:.1f} GiB ({inputs / 2**30:.1f} GiB of inputs, "
                         f"{activations / 2**30:.1f} GiB for {ACTIVATION_COPIES} copies of the largest layer output "
                         f"of {batch_size} images), more than the {available / 2**30:.1f} GiB of memory available; "
                         "use a smaller batch")
