"""The sweep: every configuration (runtime x dtype x layout) at every batch size, side by side in one process.

For each point: one-off setup (export/compile, first run of the shape) timed apart from latency; parity of
that very runner at that batch size against the CPU fp32 reference, with the criteria of its precision;
compute latency (input already on the device, device synchronised after each iteration); peak memory.
The plain-timm eager fp32 baseline on the same device is always measured first, so ratios are same-run.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..criteria import Criteria
from ..errors import RuntimeUnavailableError
from ..latency import LatencyStats, make_batch, time_calls
from ..parity import compare_outputs
from ..runners import Runner, create_runner
from ..runners.base import request_count
from .memory import PeakMemory

_logger = logging.getLogger(__name__)

MIN_ITERS = 3
_NO_LAYOUT_CHOICE = ("onnxruntime", "openvino")  # they pick their own internal layouts


@dataclass(frozen=True)
class Configuration:
    runtime: str
    dtype: str
    channels_last: bool = False
    streams: int = 1
    micro_batch: int = 0  # 0: one request per stream

    @property
    def label(self) -> str:
        return (f"{self.runtime} {self.dtype}" + (" channels-last" if self.channels_last else "")
                + (f" {self.streams} streams" if self.streams > 1 else "")
                + (f" micro-batch {self.micro_batch}" if self.micro_batch else ""))

    def to_json(self) -> dict[str, Any]:
        return {"label": self.label, "runtime": self.runtime, "dtype": self.dtype, "channels_last": self.channels_last,
                "streams": self.streams, "micro_batch": self.micro_batch}

    def splits(self, batch_size: int) -> bool:
        """Whether this configuration splits a batch of ``batch_size`` at all (else it repeats a simpler one)."""
        return request_count(batch_size, self.streams, self.micro_batch or None) > 1


BASELINE = Configuration("eager", "fp32", False)


def plan_configurations(runtimes: tuple[str, ...], dtypes: tuple[str, ...], channels_last: str,
                        streams: tuple[int, ...] = (1,), micro_batches: tuple[int, ...] = (0,)) -> list[Configuration]:
    """The eager fp32 baseline first, then each runtime x dtype in the layout ``channels_last`` asks for, and for
    the runtimes that split batches into requests on streams, once per stream count x request size."""
    from ..runners import runner_supports_streams

    planned = [BASELINE]
    for runtime in runtimes:
        for dtype in dtypes:
            if runtime in _NO_LAYOUT_CHOICE or channels_last == "off":
                layouts = [False]
            elif channels_last == "on":
                layouts = [True]
            else:  # auto: the runtime's fast path; eager stays plain timm
                layouts = [runtime == "compile"]
            splits = runner_supports_streams(runtime)
            planned += [Configuration(runtime, dtype, layout, count, micro)
                        for layout in layouts for count in (streams if splits else (1,))
                        for micro in (micro_batches if splits else (0,))]
    return list(dict.fromkeys(planned))


@dataclass(frozen=True)
class SweepSettings:
    warmup: int = 3
    iters: int = 20  # timed iterations per point, over all rounds
    max_time_s: float = 10.0  # time budget per point, over all rounds
    threads: int | None = None
    cache_dir: str | None = None
    progress: bool = True
    # Timing rounds: with more than one, every point is timed once per round, round after round, so a burst of
    # load from another process spreads over all configurations instead of skewing one (same-run ratios).
    rounds: int = 1


def time_compute(runner: Runner, batch: torch.Tensor, warmup: int, iters: int, max_time_s: float) -> list[float]:
    """Per-iteration compute latencies in ms (input on the device, synchronised); fewer when one is slow."""
    device_input = runner.to_device(batch)
    runner.synchronize()
    started = time.perf_counter()
    for _ in range(warmup):
        runner.forward(device_input)
        runner.synchronize()
    per_iter = (time.perf_counter() - started) / warmup if warmup else 0.0
    count = iters if per_iter <= 0 else max(MIN_ITERS, min(iters, int(max_time_s / per_iter)))
    return time_calls(lambda: runner.forward(device_input), runner, count)


def padded_indices(num_images: int, batch_size: int) -> np.ndarray:
    """Every image at least once, cycled to fill whole batches: one static shape, no recompilation."""
    total = max(batch_size, -(-num_images // batch_size) * batch_size)
    return np.arange(total) % num_images


def check_parity(runner: Runner, images: torch.Tensor, reference: np.ndarray, batch_size: int, criteria: Criteria,
                 is_classifier: bool) -> dict[str, Any]:
    index = padded_indices(images.shape[0], batch_size)
    chunks = [runner.infer(images[index[i : i + batch_size]]) for i in range(0, len(index), batch_size)]
    result = compare_outputs(reference[index], torch.cat(chunks).numpy(), criteria, is_classifier)
    parity = result.to_json()
    return {"precision": criteria.precision, "passed": result.passed, "samples": len(index),
            "worst_sample_cosine": parity["worst_sample_cosine"], "worst_sample_rel_l2": parity["worst_sample_rel_l2"],
            "top1_agreement": parity["top1_agreement"],
            "failed_checks": [c["name"] for c in parity["checks"] if not c["passed"]], "checks": parity["checks"]}


@dataclass
class _Point:
    """A measured point between rounds: its runner stays open and its samples accumulate."""

    row: dict[str, Any]
    runner: Runner
    batch: torch.Tensor
    samples: list[float]
    round_p50_ms: list[float]

    def time_round(self, settings: SweepSettings, warmup: int) -> None:
        rounds = max(1, settings.rounds)
        samples = time_compute(self.runner, self.batch, warmup, -(-settings.iters // rounds),
                               settings.max_time_s / rounds)
        self.samples += samples
        self.round_p50_ms.append(float(np.median(samples)))

    def finish(self) -> dict[str, Any]:
        stats = LatencyStats.from_samples(self.samples, int(self.batch.shape[0]))
        self.row.update(latency=stats.to_json(), images_per_s=stats.images_per_s, round_p50_ms=self.round_p50_ms)
        return self.row


def _first_round(runner: Runner, config: Configuration, batch_size: int, images: torch.Tensor, reference: np.ndarray,
                 criteria: Criteria, is_classifier: bool, settings: SweepSettings) -> _Point:
    """Setup for this batch size (timed apart), parity, the first timing round, and the point's peak memory."""
    memory = PeakMemory(runner.device)
    memory.start()
    setup_before = runner.setup_time_s
    batch = make_batch(images, batch_size)
    runner.warm_up(batch)
    shape_setup_s = runner.setup_time_s - setup_before
    parity = check_parity(runner, images, reference, batch_size, criteria, is_classifier)
    row = {**config.to_json(), "batch_size": batch_size, "status": "ok", "setup_s": round(shape_setup_s, 4),
           "parity": parity}
    point = _Point(row, runner, batch, [], [])
    point.time_round(settings, settings.warmup)
    row["memory"] = memory.stop()
    return point


def _failed_row(config: Configuration, batch_size: int, status: str, reason: str) -> dict[str, Any]:
    return {**config.to_json(), "batch_size": batch_size, "status": status, "reason": reason}


def _first_round_safely(runner: Runner, config: Configuration, batch_size: int, *args: Any) -> _Point | dict[str, Any]:
    """One point; an engine that cannot run it becomes a row that says why, and the sweep goes on."""
    try:
        return _first_round(runner, config, batch_size, *args)
    except RuntimeUnavailableError as exc:
        return _failed_row(config, batch_size, "unsupported", str(exc))
    except Exception as exc:  # a crash of one engine must not lose the rest of the table
        _logger.exception("%s batch %d failed", config.label, batch_size)
        return _failed_row(config, batch_size, "error", f"{type(exc).__name__}: {exc}")


def sweep(model: torch.nn.Module, images: torch.Tensor, reference: np.ndarray, device: torch.device,
          configurations: list[Configuration], batch_sizes: tuple[int, ...], criteria_by_dtype: dict[str, Criteria],
          is_classifier: bool, settings: SweepSettings) -> tuple[list[dict], list[dict]]:
    """Measure every configuration at every batch size; returns (configuration records, rows)."""
    from tqdm import tqdm

    records: list[dict] = []
    results: list[_Point | dict] = []
    runners: list[tuple[Runner, dict]] = []
    progress = tqdm(total=len(configurations) * len(batch_sizes) * max(1, settings.rounds), desc="bench",
                    unit="point", disable=not settings.progress, leave=False)
    try:
        for config in configurations:
            record: dict[str, Any] = {**config.to_json(), "status": "ok"}
            records.append(record)
            try:
                runner = create_runner(config.runtime, model, device, config.dtype, config.channels_last,
                                       threads=settings.threads, cache_dir=settings.cache_dir, streams=config.streams,
                                       micro_batch=config.micro_batch or None)
                runner.prepare()
            except RuntimeUnavailableError as exc:
                _logger.info("%s: not available: %s", config.label, exc)
                record.update(status="unsupported", reason=str(exc))
                results += [_failed_row(config, b, "unsupported", str(exc)) for b in batch_sizes]
                progress.update(len(batch_sizes) * max(1, settings.rounds))
                continue
            runners.append((runner, record))
            for batch_size in batch_sizes:
                progress.set_postfix_str(f"{config.label} batch {batch_size}")
                if (config.streams > 1 or config.micro_batch) and not config.splits(batch_size):
                    results.append(_failed_row(config, batch_size, "skipped", f"batch {batch_size} makes a single "
                                               "request: nothing to split over streams or micro-batches"))
                    progress.update(max(1, settings.rounds))
                    continue
                point = _first_round_safely(runner, config, batch_size, images, reference,
                                            criteria_by_dtype[config.dtype], is_classifier, settings)
                if isinstance(point, _Point):  # with rounds > 1, earlier runners are still open (and in RSS)
                    point.row["memory"]["other_runners_open"] = len(runners) - 1
                results.append(point)
                progress.update(1)
            if settings.rounds <= 1:
                runners.pop()
                record.update(runner.describe())
                runner.close()
        points = [p for p in results if isinstance(p, _Point)]
        for round_index in range(1, settings.rounds):
            for point in points:
                row = point.row
                progress.set_postfix_str(f"round {round_index + 1}: {row['label']} batch {row['batch_size']}")
                point.time_round(settings, warmup=1)
                progress.update(1)
    finally:
        for runner, record in runners:
            record.update(runner.describe())
            runner.close()
        progress.close()
    rows = [p.finish() if isinstance(p, _Point) else p for p in results]
    for row in rows:
        if row["status"] == "ok":
            _logger.info("%s batch %d: p50 %.3f ms, %.1f images/s, parity %s", row["label"], row["batch_size"],
                         row["latency"]["p50_ms"], row["images_per_s"], "pass" if row["parity"]["passed"] else "FAIL")
    return records, rows


def add_ratios(rows: list[dict]) -> None:
    """``ratio_vs_eager``: p50 over the same-run eager fp32 baseline's p50 at the same batch size (lower is faster)."""
    baseline = {r["batch_size"]: r["latency"]["p50_ms"] for r in rows
                if r["status"] == "ok" and r["label"] == BASELINE.label}
    for row in rows:
        base = baseline.get(row["batch_size"])
        if row["status"] == "ok" and base:
            row["ratio_vs_eager"] = row["latency"]["p50_ms"] / base
            row["speedup_vs_eager"] = base / row["latency"]["p50_ms"]
