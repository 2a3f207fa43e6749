"""What the hardware allows: the model's arithmetic per image and the device's measured matrix-multiply peak.

No engine can run a batch faster than its FLOPs divided by the peak FLOP/s of the device, so comparing a speed
target with that floor tells a target that needs a better engine from one that needs other hardware. FLOPs
are counted by torch's own ``FlopCounterMode`` (convolutions and matrix multiplies, which dominate a ConvNeXt;
element-wise work is not counted, so the floor is a lower bound). The peak is measured, not taken from a data
sheet: the best of several large square matmuls in the given dtype, with the threads torch uses.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from ..devices import synchronize
from ..runners.base import DTYPES

_logger = logging.getLogger(__name__)


def model_flops(model: torch.nn.Module, input_shape: tuple[int, ...] | list[int]) -> int | None:
    """FLOPs (multiply and add counted apart) of one forward pass on a CPU fp32 input of ``input_shape``; None
    when torch cannot count this model."""
    try:
        with FlopCounterMode(display=False) as counter, torch.inference_mode():
            model(torch.zeros(tuple(input_shape)))
    except Exception as exc:  # an exotic op the counter cannot trace must not cost the benchmark
        _logger.warning("could not count the model's FLOPs: %s", exc)
        return None
    return int(counter.get_total_flops())


def matmul_peak(device: torch.device, dtype: str = "fp32", max_size: int = 2048, repeats: int = 10,
                max_seconds_each: float = 0.25) -> dict[str, Any]:
    """The best FLOP/s of square matmuls on ``device`` in ``dtype``, over sizes 256, 512, 1024, ... up to
    ``max_size`` (best, not median: a peak is what the hardware can do, and interference only slows it down).

    A size is skipped once one multiply would take longer than ``max_seconds_each`` at the best rate so far
    (bf16 on a CPU without bf16 instructions runs at ~1 GFLOP/s), so this stays a few seconds everywhere.
    """
    best_rate, best_size, size = 0.0, 0, 256
    while size <= max_size:
        if best_rate and 2.0 * size**3 / best_rate > max_seconds_each:
            break
        rate = 2.0 * size**3 / _best_seconds(device, dtype, size, repeats if best_rate else 2)
        if rate > best_rate:
            best_rate, best_size = rate, size
        size *= 2
    return {"device": str(device), "dtype": dtype, "size": best_size, "threads": torch.get_num_threads(),
            "gflops_per_s": best_rate / 1e9}


def _best_seconds(device: torch.device, dtype: str, size: int, repeats: int) -> float:
    generator = torch.Generator().manual_seed(0)
    a, b = (torch.randn(size, size, generator=generator).to(device, DTYPES[dtype]) for _ in range(2))
    torch.mm(a, b)
    synchronize(device)
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        torch.mm(a, b)
        synchronize(device)
        best = min(best, time.perf_counter() - started)
    return best


def floor_ms(gflops: float, peak_gflops_per_s: float) -> float:
    """The least time ``gflops`` of work can take at ``peak_gflops_per_s``."""
    return gflops / peak_gflops_per_s * 1000.0


def add_achieved_flops(rows: list[dict[str, Any]], flops_per_image: int | None) -> None:
    """``achieved_gflops_per_s`` per measured row: the model's counted FLOPs over its p50 latency."""
    if not flops_per_image:
        return
    for row in rows:
        if row["status"] == "ok":
            seconds = row["latency"]["p50_ms"] / 1000.0
            row["achieved_gflops_per_s"] = flops_per_image * row["batch_size"] / seconds / 1e9
