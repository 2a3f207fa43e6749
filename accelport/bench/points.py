"""One point of the sweep (a configuration at a batch size): setup, parity, timing rounds, and its verdict.

Each timing round is taken inside a ``LoadMonitor``, so every point carries what the rest of the machine did
while it was timed, and ``reliability.assess`` decides whether its figures can be believed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..criteria import Criteria
from ..errors import AccelportError, RuntimeUnavailableError
from ..latency import LatencyStats, make_batch, time_calls
from ..machine_load import LoadMonitor
from ..parity import compare_outputs
from ..reliability import assess
from ..runners import QUANTIZED_DTYPES, Runner
from .memory import PeakMemory

if TYPE_CHECKING:
    from .journal import JournalWriter

_logger = logging.getLogger(__name__)

MIN_ITERS = 3  # timed iterations per point at least, over all its rounds


def time_compute(runner: Runner, batch: torch.Tensor, warmup: int, iters: int, max_time_s: float,
                 min_iters: int = MIN_ITERS, known_call_s: float | None = None) -> list[float]:
    """Per-iteration compute latencies in ms (input on the device, synchronised); fewer when one is slow.

    Warm-up: the first call always, further ones only while they have used less than a quarter of
    ``max_time_s``: a 5-second call (bf16 on a CPU without bf16 arithmetic) warms nothing a second time, and three
    of them would cost more than the point's whole budget. Without warm-up (a later round of a slow point), the
    call time an earlier round measured (``known_call_s``) sizes the round instead, so it keeps to its budget.
    """
    device_input = runner.to_device(batch)
    runner.synchronize()
    started, done = time.perf_counter(), 0
    while done < warmup and (done == 0 or time.perf_counter() - started < max_time_s / 4):
        runner.forward(device_input)
        runner.synchronize()
        done += 1
    per_iter = (time.perf_counter() - started) / done if done else (known_call_s or 0.0)
    count = iters if per_iter <= 0 else max(min_iters, min(iters, int(max_time_s / per_iter)))
    return time_calls(lambda: runner.forward(device_input), runner, count)


def padded_indices(num_images: int, batch_size: int) -> np.ndarray:
    """Every image at least once, cycled to fill whole batches: one static shape, no recompilation."""
    total = max(batch_size, -(-num_images // batch_size) * batch_size)
    return np.arange(total) % num_images


def padded_names(num_images: int, batch_size: int) -> list[str]:
    """A name per ``padded_indices`` position, by its image: every position is judged (a wrong later request of a
    split batch holds only repeats), and a detail must not name an "image 3" of 3 images."""
    return [f"image {i}" + (f" (repeated at position {p})" if p >= num_images else "")
            for p, i in enumerate(padded_indices(num_images, batch_size))]


# (reference, target outputs) of the padded images -> the structural proof's record (bench/sweep.py's _proof)
Proof = Callable[[np.ndarray, np.ndarray], dict[str, Any]]


def padded_outputs(runner: Runner, images: torch.Tensor, batch_size: int) -> np.ndarray:
    """The runner's outputs for ``padded_indices``' images, in whole batches of ``batch_size``."""
    index = padded_indices(images.shape[0], batch_size)
    return torch.cat([runner.infer(images[index[i : i + batch_size]])
                      for i in range(0, len(index), batch_size)]).numpy()


def check_parity(runner: Runner, images: torch.Tensor, reference: np.ndarray, batch_size: int, criteria: Criteria,
                 is_classifier: bool) -> dict[str, Any]:
    return _parity(runner, images, reference, batch_size, criteria, is_classifier)[0]


def _parity(runner: Runner, images: torch.Tensor, reference: np.ndarray, batch_size: int, criteria: Criteria,
            is_classifier: bool, nonfinite: dict[str, int] | None = None) -> tuple[dict[str, Any], np.ndarray]:
    index = padded_indices(images.shape[0], batch_size)
    outputs = padded_outputs(runner, images, batch_size)
    result = compare_outputs(reference[index], outputs, criteria, is_classifier, judge_zero_reference=True,
                             nonfinite_weights=nonfinite, sample_names=padded_names(images.shape[0], batch_size),
                             sample_images=[int(i) for i in index])
    parity = result.to_json()
    record = {"precision": criteria.precision, "passed": result.passed, "samples": len(index),
              "worst_sample_cosine": parity["worst_sample_cosine"],
              "worst_sample_rel_l2": parity["worst_sample_rel_l2"], "top1_agreement": parity["top1_agreement"],
              "failed_checks": [c["name"] for c in parity["checks"] if not c["passed"]], "checks": parity["checks"],
              # as run's caution (absent: not blind); the structural proof may still see it (add_proof)
              **({"input_blind": True, "constant_output_rel_l2": result.constant_output_rel_l2}
                 if result.input_blind else {}),
              # run's caution: all-zero outputs where the reference's are not (absent: none), counted over the
              # distinct images (the padding of the last batch repeats some)
              **({"zero_target_count": zeros, "images": images.shape[0]}
                 if (zeros := _zero_target_count(index, reference[index], outputs)) else {})}
    return record, outputs


def _zero_target_count(index: np.ndarray, reference: np.ndarray, outputs: np.ndarray) -> int:
    """How many distinct images (``index``: which image each output row is) gave all-zero outputs where the
    reference's are not."""
    return len({int(i) for i, ref, out in zip(index, reference, outputs, strict=True) if not out.any() and ref.any()})


def add_proof(parity: dict[str, Any], proof: dict[str, Any]) -> None:
    """The structural proof into a point's parity; its failure fails the point (as it fails ``run``): int8's own
    error hides a weight fault that fp32 sees."""
    parity["structural_proof"] = proof
    if parity.get("input_blind") and proof.get("input_blind") is False:
        del parity["input_blind"]  # strict fp32 would see a target that ignores its input
    if proof["status"] == "failed":
        parity.update(passed=False, failed_checks=[*parity["failed_checks"], "structural_proof"])


@dataclass
class Point:
    """A measured point between rounds: its runner stays open and its samples accumulate (also from a journal)."""

    row: dict[str, Any]
    runner: Runner | None = None
    batch: torch.Tensor | None = None
    samples: list[float] = field(default_factory=list)
    round_p50_ms: list[float] = field(default_factory=list)
    loads: list[dict[str, Any] | None] = field(default_factory=list)

    @property
    def key(self) -> tuple[str, int]:
        return self.row["label"], self.row["batch_size"]

    def add_round(self, samples: list[float], load: dict[str, Any] | None) -> None:
        self.samples += samples
        self.round_p50_ms.append(float(np.median(samples)))
        self.loads.append(load)

    def time_round(self, settings: Any, warmup: int, journal: JournalWriter | None) -> None:
        """One timing round, watched by a LoadMonitor, appended to the journal as soon as it is taken."""
        rounds = max(1, settings.rounds)
        assert self.runner is not None and self.batch is not None, "time_round on a point restored without a runner"
        with LoadMonitor() as monitor:
            known_call_s = self.round_p50_ms[-1] / 1000 if self.round_p50_ms else None
            samples = time_compute(self.runner, self.batch, warmup, -(-settings.iters // rounds),
                                   settings.max_time_s / rounds, -(-MIN_ITERS // rounds), known_call_s)
        load = monitor.window.to_json() if monitor.window else None
        self.add_round(samples, load)
        if journal is not None:
            journal.round(self.key, samples, load)

    def finish(self, threads: int) -> dict[str, Any]:
        stats = LatencyStats.from_samples(self.samples, self.row["batch_size"])
        latency = stats.to_json()
        reliability = assess({"compute": latency}, self.loads, threads, self.round_p50_ms)
        self.row.update(latency=latency, images_per_s=stats.images_per_s, round_p50_ms=self.round_p50_ms,
                        load=self.loads, reliability=reliability)
        return self.row


def first_round(runner: Runner, config: Any, batch_size: int, images: torch.Tensor, reference: np.ndarray,
                criteria: Criteria, is_classifier: bool, settings: Any, journal: JournalWriter | None, *,
                proof: Proof | None = None) -> Point:
    """Setup for this batch size (timed apart), parity (and the structural proof: int8, and half precision with
    --target-weights), the first timing round, and the point's peak memory."""
    memory = PeakMemory(runner.device)
    memory.start()
    setup_before = runner.setup_time_s
    batch = make_batch(images, batch_size)
    runner.warm_up(batch)
    shape_setup_s = runner.setup_time_s - setup_before
    parity, outputs = _parity(runner, images, reference, batch_size, criteria, is_classifier,
                              settings.nonfinite_weights)
    row = {**config.to_json(), "batch_size": batch_size, "status": "ok", "setup_s": round(shape_setup_s, 4),
           "parity": parity, **calibration_record(runner), **_engine_setting_record(runner)}
    point = Point(row, runner, batch)
    point.time_round(settings, settings.warmup, journal=None)
    row["memory"] = memory.stop()
    if proof is not None:  # after the point's memory and timing: its fp32 runner is not the point's
        add_proof(parity, proof(reference[padded_indices(images.shape[0], batch_size)], outputs))
    if journal is not None:  # the row first: a point cut off before its round is measured again on --resume
        journal.point(row)
        journal.round(point.key, point.samples, point.loads[-1])
    return point


def calibration_record(runner: Runner) -> dict[str, Any]:
    """A quantised point's calibration (images, source, digest) and quantiser, from its runner; {} for a float one."""
    if runner.dtype not in QUANTIZED_DTYPES:
        return {}
    described = runner.describe()
    return {"calibration": {key: described[key] for key in ("calibration_images", "calibration_source",
                                                              "calibration_sha256", "quantizer") if key in described}}


def _engine_setting_record(runner: Runner) -> dict[str, Any]:
    """An engine setting the runner changed on its own for this point (OpenVINO's subgraph JIT off after a trial
    process crashed): its timing is of that setting, whatever the row's label says."""
    disabled = runner.describe().get("snippets_disabled") if runner.dtype in QUANTIZED_DTYPES else None
    return {"snippets_disabled": disabled} if disabled else {}


def failed_row(config: Any, batch_size: int, status: str, reason: str) -> dict[str, Any]:
    return {**config.to_json(), "batch_size": batch_size, "status": status, "reason": reason}


def first_round_safely(runner: Runner, config: Any, batch_size: int, *args: Any,
                       proof: Proof | None = None) -> Point | dict[str, Any]:
    """One point; an engine that cannot run it becomes a row that says why, and the sweep goes on."""
    try:
        return first_round(runner, config, batch_size, *args, proof=proof)
    except RuntimeUnavailableError as exc:
        return failed_row(config, batch_size, "unsupported", str(exc))
    except AccelportError as exc:  # the user's input (an unreadable --calibration image): said, no traceback
        _logger.error("%s batch %d failed: %s", config.label, batch_size, exc)
        return failed_row(config, batch_size, "error", f"{type(exc).__name__}: {exc}")
    except Exception as exc:  # a crash of one engine must not lose the rest of the table
        _logger.exception("%s batch %d failed", config.label, batch_size)
        return failed_row(config, batch_size, "error", f"{type(exc).__name__}: {exc}")
