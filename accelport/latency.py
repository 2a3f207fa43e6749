"""Latency that can be trusted: warm-up, then per-iteration timing with the device synchronised.

Every backend goes through ``runner.synchronize()``, so an asynchronous device (CUDA, NPU, XPU, MPS) is
timed to completion, never to the moment its queue accepted the work.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from .machine_load import LoadMonitor
from .reliability import assess
from .runners.base import Runner

_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LatencyStats:
    """Statistics of per-batch latencies in milliseconds; images/s uses the median (robust to noise)."""

    batch_size: int
    iters: int
    mean_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    min_ms: float
    max_ms: float
    std_ms: float
    images_per_s: float

    @classmethod
    def from_samples(cls, samples_ms: list[float], batch_size: int) -> LatencyStats:
        values = np.asarray(samples_ms, dtype=np.float64)
        p50 = float(np.percentile(values, 50))
        return cls(
            batch_size=batch_size,
            iters=int(values.size),
            mean_ms=float(values.mean()),
            p50_ms=p50,
            p90_ms=float(np.percentile(values, 90)),
            p99_ms=float(np.percentile(values, 99)),
            min_ms=float(values.min()),
            max_ms=float(values.max()),
            std_ms=float(values.std(ddof=1)) if values.size > 1 else 0.0,
            images_per_s=batch_size * 1000.0 / p50 if p50 > 0 else float("inf"),
        )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class LatencyReport:
    """``compute``: input already on the device. ``with_copies``: host-to-device input copy, compute, and the
    device-to-host copy of the output, as an application pays for one batch."""

    compute: LatencyStats
    with_copies: LatencyStats
    warmup: int
    # The machine while each mode was timed (machine_load.LoadWindow as JSON; None without /proc), and whether
    # the figures can be believed (reliability.assess).
    load: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    reliability: dict[str, Any] = field(default_factory=lambda: {"reliable": True, "reasons": [], "advice": None})

    def to_json(self) -> dict[str, Any]:
        return {"warmup": self.warmup, "compute": self.compute.to_json(), "with_copies": self.with_copies.to_json(),
                "reliability": self.reliability, "load": self.load}


def make_batch(images: torch.Tensor, batch_size: int) -> torch.Tensor:
    """A batch of exactly ``batch_size`` real images, cycling through them when there are fewer."""
    repeats = -(-batch_size // images.shape[0])
    return images.repeat(repeats, 1, 1, 1)[:batch_size].contiguous()


def time_calls_monitored(fn, runner: Runner, iters: int) -> tuple[list[float], dict[str, Any] | None]:
    """``time_calls``, and what the rest of the machine did meanwhile (``LoadWindow`` as JSON, or None)."""
    with LoadMonitor() as monitor:
        samples = time_calls(fn, runner, iters)
    return samples, monitor.window.to_json() if monitor.window else None


def time_calls(fn, runner: Runner, iters: int) -> list[float]:
    """Milliseconds of ``iters`` calls of ``fn``, each timed until ``runner``'s device has finished."""
    samples = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        runner.synchronize()
        samples.append((time.perf_counter() - start) * 1000.0)
    return samples


def measure_latency(runner: Runner, batch: torch.Tensor, warmup: int = 10, iters: int = 50) -> LatencyReport:
    """Time ``runner`` on ``batch`` (host fp32), compute-only and with copies, after ``warmup`` iterations."""
    if iters < 1 or warmup < 0:
        raise ValueError("iters must be >= 1 and warmup >= 0")
    batch = runner.host_batch(batch)  # pinned once, as a serving loop would, not per iteration
    device_input = runner.to_device(batch)
    runner.synchronize()
    for _ in range(warmup):
        runner.forward(device_input)
    runner.synchronize()
    compute, compute_load = time_calls_monitored(lambda: runner.forward(device_input), runner, iters)
    with_copies, copies_load = time_calls_monitored(
        lambda: runner.to_host(runner.forward(runner.to_device(batch))), runner, iters)
    batch_size = int(batch.shape[0])
    stats = {"compute": LatencyStats.from_samples(compute, batch_size),
             "with_copies": LatencyStats.from_samples(with_copies, batch_size)}
    load = {"compute": compute_load, "with_copies": copies_load}
    reliability = assess({k: v.to_json() for k, v in stats.items()}, list(load.values()), runner.threads)
    report = LatencyReport(**stats, warmup=warmup, load=load, reliability=reliability)
    _logger.info("Latency batch %d: p50 %.3f ms compute, %.3f ms with copies", batch_size,
                 report.compute.p50_ms, report.with_copies.p50_ms)
    for reason in reliability["reasons"]:
        _logger.warning("latency may not be believed: %s", reason["message"])
    if not reliability["reliable"]:
        _logger.warning("what to do: %s", reliability["advice"])
    return report
