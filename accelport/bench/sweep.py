"""The sweep: every configuration (runtime x dtype x layout) at every batch size, side by side in one process.

For each point: one-off setup (export/compile, first run of the shape) timed apart from latency; parity of
that very runner at that batch size against the CPU fp32 reference, with the criteria of its precision;
compute latency (input already on the device, device synchronised after each iteration); peak memory.
The plain-timm eager fp32 baseline on the same device is always measured first, so ratios are same-run.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from ..criteria import Criteria
from ..errors import RuntimeUnavailableError
from ..latency import make_batch
from ..progress import progress_bar
from ..proofs import RoundedReference, structural_proof
from ..reliability import summarise
from ..runners import QUANTIZED_DTYPES, Runner, create_runner
from ..runners.base import request_count
from .journal import JournalState, JournalWriter
from .peers import BASELINE_PEER, RECIPES, create_peer_runner, peer_names
from .points import Point, Proof, failed_row, first_round_safely, padded_indices, padded_names, padded_outputs

__all__ = ["BASELINE", "Configuration", "SweepSettings", "add_ratios", "padded_indices", "plan_configurations",
           "reliability_summary", "sweep"]

_logger = logging.getLogger(__name__)

_NO_LAYOUT_CHOICE = ("onnxruntime", "openvino")  # they pick their own internal layouts


@dataclass(frozen=True)
class Configuration:
    runtime: str
    dtype: str
    channels_last: bool = False
    streams: int = 1
    micro_batch: int = 0  # 0: one request per stream
    peer: str = ""  # a hand-written recipe of bench/peers.py (measured, never picked), else accelport's own
    threads: int = 0  # intra-op threads; 0: the sweep's common count (SweepSettings.threads)
    int8_remainder: str = ""  # OpenVINO int8's float work in another precision ("bf16"); "": fp32, the default

    @property
    def kind(self) -> str:
        return "peer" if self.peer else "baseline" if self == BASELINE else "accelport"

    @property
    def label(self) -> str:
        if self.peer:
            return RECIPES[self.peer].label(self.dtype)
        return (f"{self.runtime} {self.dtype}" + (" channels-last" if self.channels_last else "")
                + (f" {self.streams} streams" if self.streams > 1 else "")
                + (f" micro-batch {self.micro_batch}" if self.micro_batch else "")
                + (f" {self.int8_remainder} remainder" if self.int8_remainder else "")
                + (f" {self.threads} thread{'s' if self.threads > 1 else ''}" if self.threads else ""))

    def to_json(self) -> dict[str, Any]:
        return {"label": self.label, "runtime": self.runtime, "dtype": self.dtype, "channels_last": self.channels_last,
                "streams": self.streams, "micro_batch": self.micro_batch, "kind": self.kind,
                "peer": self.peer or (BASELINE_PEER if self.kind == "baseline" else None),
                **({"threads": self.threads} if self.threads else {}),
                **({"int8_remainder": self.int8_remainder} if self.int8_remainder else {})}

    def splits(self, batch_size: int) -> bool:
        """Whether this configuration splits a batch of ``batch_size`` at all (else it repeats a simpler one)."""
        return request_count(batch_size, self.streams, self.micro_batch or None) > 1


BASELINE = Configuration("eager", "fp32", False)


def plan_configurations(runtimes: tuple[str, ...], dtypes: tuple[str, ...], channels_last: str,
                        streams: tuple[int, ...] = (1,), micro_batches: tuple[int, ...] = (0,),
                        peers: bool = False, threads: tuple[int, ...] = ()) -> list[Configuration]:
    """The eager fp32 baseline first, then each runtime x dtype in the layout ``channels_last`` asks for, and for
    the runtimes that split batches into requests on streams, once per stream count x request size; each
    single-stream configuration also once per thread count of ``threads`` (counts besides the sweep's common one;
    streams already divide the threads among them); with ``peers``, then the hand-written recipes of
    bench/peers.py in each dtype, at the common count as a user gets it."""
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
            own = [Configuration(runtime, dtype, layout, count, micro)
                   for layout in layouts for count in (streams if splits else (1,))
                   for micro in (micro_batches if splits else (0,))]
            planned += own + [replace(c, threads=n) for c in own if c.streams == 1 and not c.micro_batch
                              for n in threads]
            if runtime == "openvino" and dtype == "int8":  # its float remainder in bf16 too: which is faster
                # depends on the CPU and the batch (docs/int8.md); a CPU without bf16 says so in its row
                planned += [replace(c, int8_remainder="bf16") for c in own]
    if peers:
        planned += [Configuration(RECIPES[name].runtime, dtype, RECIPES[name].channels_last, peer=name)
                    for name, dtype in peer_names(dtypes)]
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
    calibration: tuple[str, ...] = ()  # int8 points: the quantisers' calibration images (() = bundled samples)
    fp32_math: str = "strict"  # the job's, restored after a point's structural proof (run in strict fp32)
    # --target-weights: half-precision points get the structural proof too, as in ``run`` (bf16's own error hides a
    # weight fault that strict fp32 sees; without it a broken port's bf16 rows passed and were picked)
    prove_half_precision: bool = False
    # NaN/Inf in either side's weights ("<side> weights: <tensor>" -> count; {} when none): every point has run's and
    # eval's nonfinite_weights check (a port with an Inf in a tensor its outputs never reach passed and was picked);
    # None: no weights scan (a sweep of bare models)
    nonfinite_weights: dict[str, int] | None = None


class _Sweep:
    """The sweep's shared state: what every point needs, the journal it writes, and the journal it resumes."""

    def __init__(self, model: torch.nn.Module, images: torch.Tensor, reference: np.ndarray, device: torch.device,
                 criteria_by_dtype: dict[str, Criteria], is_classifier: bool, settings: SweepSettings,
                 journal: JournalWriter | None, resumed: JournalState | None, progress: Any,
                 rounded: tuple[RoundedReference, np.ndarray] | None = None):
        self.model, self.images, self.reference, self.device = model, images, reference, device
        self.rounded = rounded  # a half-precision --target-weights copy: the proof's reference and its outputs
        self.criteria_by_dtype, self.is_classifier, self.settings = criteria_by_dtype, is_classifier, settings
        self.journal, self.resumed, self.progress = journal, resumed or JournalState(), progress
        self.rounds = max(1, settings.rounds)

    def _restored(self, key: tuple[str, int]) -> Point | dict[str, Any] | None:
        """The point as the journal left it: a finished row, a Point with its rounds so far, or None."""
        row = self.resumed.rows.get(key)
        if row is None:
            return None
        if row["status"] != "ok":
            return row
        entries = self.resumed.rounds.get(key, [])[: self.rounds]
        if not entries:  # interrupted between the row and its first round: measured again (points.py)
            return None
        point = Point(dict(row))
        for entry in entries:
            point.add_round(entry["samples"], entry["load"])
        return point

    def _complete(self, point: Point | dict[str, Any] | None) -> bool:
        return point is not None and (not isinstance(point, Point) or len(point.round_p50_ms) >= self.rounds)

    def _journal(self, kind: str, value: dict[str, Any]) -> None:
        if self.journal is not None:
            getattr(self.journal, kind)(value)

    def configuration(self, config: Configuration, batch_sizes: tuple[int, ...], record: dict[str, Any],
                      runners: list[tuple[Runner, dict]]) -> list[Point | dict[str, Any]]:
        """Every batch size of one configuration: from the journal where it is finished, else measured."""
        restored = {b: self._restored((config.label, b)) for b in batch_sizes}
        if all(self._complete(p) for p in restored.values()) and config.label in self.resumed.records:
            record.update(self.resumed.records[config.label])
            self.progress.update(len(batch_sizes) * self.rounds)
            return [point for point in restored.values() if point is not None]  # all complete
        try:
            runner = self._runner(config, config.dtype)
            runner.prepare()
        except RuntimeUnavailableError as exc:
            _logger.info("%s: not available: %s", config.label, exc)
            record.update(status="unsupported", reason=str(exc))
            self._journal("configuration", record)
            rows = [failed_row(config, b, "unsupported", str(exc)) for b in batch_sizes]
            for row in rows:
                self._journal("point", row)
            self.progress.update(len(batch_sizes) * self.rounds)
            return list[Point | dict[str, Any]](rows)
        runners.append((runner, record))
        self._journal("configuration", {**record, **runner.describe()})
        return [self._point(runner, config, b, restored[b], len(runners) - 1) for b in batch_sizes]

    def _runner(self, config: Configuration, dtype: str) -> Runner:
        """The runner of ``config`` in ``dtype``: a peer's recipe (its structural proof: the same recipe in fp32), or
        accelport's own runtime (int8: calibrated on ``settings.calibration``)."""
        settings = self.settings
        if config.peer:
            return create_peer_runner(config.peer, self.model, self.device, dtype, threads=settings.threads,
                                      cache_dir=settings.cache_dir)
        calibration = {"calibration": settings.calibration} if dtype in QUANTIZED_DTYPES else {}
        return create_runner(config.runtime, self.model, self.device, dtype, config.channels_last,
                             threads=config.threads or settings.threads, cache_dir=settings.cache_dir,
                             streams=config.streams, micro_batch=config.micro_batch or None, **calibration,
                             **({"int8_remainder": config.int8_remainder} if config.int8_remainder else {}))

    def _proof(self, config: Configuration, batch_size: int) -> Proof | None:
        """For a quantised point, and a half-precision or fp32-fast (TF32/HF32) one when the sweep runs a port
        (``prove_half_precision``), the structural proof as ``run`` makes it: the same engine, layout and requests in
        strict fp32, judged by the fp32 criteria (and outputs bit-identical to it refused: the engine did not run the
        precision it claims). fp32-fast's criteria are 20x looser than strict fp32's: without the proof, a port whose
        weight fault strict fp32 sees passed and was picked."""
        precision = self.criteria_by_dtype[config.dtype].precision
        if precision == "fp32" or (config.dtype not in QUANTIZED_DTYPES and not self.settings.prove_half_precision):
            return None

        def prove(reference: np.ndarray, outputs: np.ndarray) -> dict[str, Any]:
            rounded = None
            if self.rounded is not None:
                rounded, rounded_outputs = self.rounded
                reference = rounded_outputs[padded_indices(self.images.shape[0], batch_size)]
            proof = structural_proof(precision, True, lambda: self._runner(config, "fp32"), self.device,
                                     self.settings.fp32_math,
                                     lambda runner: padded_outputs(runner, self.images, batch_size), reference,
                                     outputs, self.is_classifier, padded_names(self.images.shape[0], batch_size),
                                     rounded)
            record = proof.to_json()
            parity = record.pop("parity", None)
            if parity is not None:  # the summary of it, as a row's own parity
                record.update(passed=parity["passed"], worst_sample_cosine=parity["worst_sample_cosine"],
                              worst_sample_rel_l2=parity["worst_sample_rel_l2"],
                              failed_checks=[c["name"] for c in parity["checks"] if not c["passed"]],
                              input_blind=bool(proof.parity and proof.parity.input_blind))
            return record
        return prove

    def _point(self, runner: Runner, config: Configuration, batch_size: int, restored: Point | dict | None,
               others_open: int) -> Point | dict[str, Any]:
        self.progress.set_postfix_str(f"{config.label} batch {batch_size}")
        if isinstance(restored, Point):  # its parity is journaled; its remaining rounds need the runner
            restored.runner, restored.batch = runner, make_batch(self.images, batch_size)
            if len(restored.round_p50_ms) < self.rounds:
                runner.warm_up(restored.batch)  # this shape's setup, kept out of the rounds still to time
            self.progress.update(len(restored.round_p50_ms))
            return restored
        if restored is not None:
            self.progress.update(self.rounds)
            return restored
        if (config.streams > 1 or config.micro_batch) and not config.splits(batch_size):
            row = failed_row(config, batch_size, "skipped", f"batch {batch_size} makes a single request: nothing "
                             "to split over streams or micro-batches")
            self._journal("point", row)
            self.progress.update(self.rounds)
            return row
        point = first_round_safely(runner, config, batch_size, self.images, self.reference,
                                   self.criteria_by_dtype[config.dtype], self.is_classifier, self.settings,
                                   self.journal, proof=self._proof(config, batch_size))
        if isinstance(point, Point):  # with rounds > 1, earlier runners are still open (and in RSS)
            point.row["memory"]["other_runners_open"] = others_open
        else:
            self._journal("point", point)
        self.progress.update(1)
        return point

    def _round_warmup(self, point: Point) -> int:
        """One untimed call after switching from the other engines, unless one call alone exceeds half the
        round's time budget (then the switch is noise against the call, and the budget is spent twice)."""
        if not point.round_p50_ms:
            return self.settings.warmup
        return 0 if point.round_p50_ms[-1] / 1000 > self.settings.max_time_s / self.rounds / 2 else 1

    def more_rounds(self, points: list[Point]) -> None:
        """Rounds 2..N, round after round over every point that still lacks them."""
        for round_index in range(1, self.rounds):
            for point in points:
                if len(point.round_p50_ms) > round_index:
                    continue
                self.progress.set_postfix_str(f"round {round_index + 1}: {point.row['label']} "
                                              f"batch {point.row['batch_size']}")
                point.time_round(self.settings, self._round_warmup(point), self.journal)
                self.progress.update(1)


def sweep(model: torch.nn.Module, images: torch.Tensor, reference: np.ndarray, device: torch.device,
          configurations: list[Configuration], batch_sizes: tuple[int, ...], criteria_by_dtype: dict[str, Criteria],
          is_classifier: bool, settings: SweepSettings, journal: JournalWriter | None = None,
          resumed: JournalState | None = None,
          rounded: tuple[RoundedReference, np.ndarray] | None = None) -> tuple[list[dict], list[dict]]:
    """Measure every configuration at every batch size; returns (configuration records, rows).

    With a ``journal``, every finished point and round is written to it as it is taken; ``resumed`` holds what an
    interrupted sweep journaled, which is reused instead of measured again. ``rounded``: the structural proof's
    reference for a half-precision ``--target-weights`` copy (``proofs.rounded_reference``) and its outputs.
    """
    records: list[dict] = []
    results: list[Point | dict] = []
    runners: list[tuple[Runner, dict]] = []
    progress = progress_bar(len(configurations) * len(batch_sizes) * max(1, settings.rounds), "bench", "point",
                            settings.progress)
    state = _Sweep(model, images, reference, device, criteria_by_dtype, is_classifier, settings, journal, resumed,
                   progress, rounded)
    try:
        for config in configurations:
            record: dict[str, Any] = {**config.to_json(), "status": "ok"}
            records.append(record)
            results += state.configuration(config, batch_sizes, record, runners)
            if settings.rounds <= 1 and runners and runners[-1][1] is record:
                _close(*runners.pop(), journal)
        state.more_rounds([p for p in results if isinstance(p, Point)])
    finally:
        while runners:
            _close(*runners.pop(), journal)
        progress.close()
    threads = settings.threads or torch.get_num_threads()
    rows = [p.finish(p.row.get("threads") or threads) if isinstance(p, Point) else p for p in results]
    for row in rows:
        if row["status"] == "ok":
            _logger.info("%s batch %d: p50 %.3f ms, %.1f images/s, parity %s%s", row["label"], row["batch_size"],
                         row["latency"]["p50_ms"], row["images_per_s"], "pass" if row["parity"]["passed"] else "FAIL",
                         "" if row["reliability"]["reliable"] else " (timing UNRELIABLE)")
    return records, rows


def _close(runner: Runner, record: dict[str, Any], journal: JournalWriter | None) -> None:
    record.update(runner.describe())
    runner.close()
    if journal is not None:
        journal.configuration(record)


def add_ratios(rows: list[dict]) -> None:
    """``ratio_vs_eager``: p50 over the same-run eager fp32 baseline's p50 at the same batch size (lower is faster)."""
    baseline = {r["batch_size"]: r["latency"]["p50_ms"] for r in rows
                if r["status"] == "ok" and r["label"] == BASELINE.label}
    for row in rows:
        base = baseline.get(row["batch_size"])
        if row["status"] == "ok" and base:
            row["ratio_vs_eager"] = row["latency"]["p50_ms"] / base
            row["speedup_vs_eager"] = base / row["latency"]["p50_ms"]


def reliability_summary(rows: list[dict]) -> dict[str, Any]:
    """The sweep's verdict on its timings; a ratio is only as good as its baseline, so that is said too."""
    measured = [r for r in rows if r["status"] == "ok"]
    summary = summarise([r["reliability"] for r in measured])
    summary["unreliable"] = [f"{r['label']} batch {r['batch_size']}" for r in measured
                             if not r["reliability"]["reliable"]]
    summary["unreliable_baselines"] = [r["batch_size"] for r in measured
                                       if r["label"] == BASELINE.label and not r["reliability"]["reliable"]]
    return summary
