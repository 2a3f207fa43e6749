"""One process's share of the evaluation: stream batches, run reference and target, keep small per-image records.

Each stage is timed on its own so the report can say what limits the throughput: the decoding and
preprocessing time is measured inside the loader workers, the models' time around ``runner.infer`` with the
device synchronised, and the loop's wait for the next batch shows whether the workers keep up.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from ..criteria import Criteria, check, criteria_for
from ..devices import apply_numeric_settings
from ..errors import InputError
from ..parity import nonfinite_weights_detail
from ..proofs import RoundedReference, check_not_fp32, nonfinite_weights, proof_reason
from ..runners import Runner, create_runner
from .aggregate import verdict
from .dataset import DatasetItem, LoadedBatch
from .journal import JournalWriter
from .records import ImageRecord, records_from_outputs
from .reference_cache import ReferenceCache

_logger = logging.getLogger(__name__)


@dataclass
class StageTimes:
    """Seconds and image counts per stage, summed over batches (and over ranks by ``merged``)."""

    images: int = 0
    decoded: int = 0
    decode_s: float = 0.0
    data_wait_s: float = 0.0
    reference_images: int = 0
    reference_s: float = 0.0
    target_s: float = 0.0
    compare_s: float = 0.0
    loop_s: float = 0.0

    @classmethod
    def merged(cls, parts: list[StageTimes]) -> StageTimes:
        total = cls()
        for part in parts:
            for name, value in asdict(part).items():
                setattr(total, name, getattr(total, name) + value)
        total.loop_s = max((p.loop_s for p in parts), default=0.0)  # ranks run side by side
        return total

    def to_json(self, workers: int, world_size: int) -> dict[str, Any]:
        def rate(images: int, seconds: float) -> float | None:  # None: the stage ran no image
            return None if images == 0 else images / seconds if seconds > 0 else 0.0

        compute_s = self.reference_s + self.target_s + self.compare_s
        stages = [
            {"stage": "whole pipeline" + (f" ({world_size} processes)" if world_size > 1 else ""),
             "images_per_s": rate(self.images, self.loop_s), "seconds": self.loop_s},
            {"stage": "decode + preprocess (" + ("in the main process" if workers == 0 else "one loader process")
                       + ")", "images_per_s": rate(self.decoded, self.decode_s),
             "seconds": self.decode_s},
            {"stage": "reference model, CPU fp32: " + ("every image from --reference-cache"
                                                        if self.images and not self.reference_images
                                                        else "cache misses only"),
             "images_per_s": rate(self.reference_images, self.reference_s), "seconds": self.reference_s},
            {"stage": "target model (copies in and out included)", "images_per_s": rate(self.images, self.target_s),
             "seconds": self.target_s},
            {"stage": "per-image metrics", "images_per_s": rate(self.images, self.compare_s),
             "seconds": self.compare_s},
        ]
        wait_share = self.data_wait_s / (self.data_wait_s + compute_s) if self.data_wait_s + compute_s > 0 else 0.0
        return {
            "stages": stages,
            "loader_workers": workers,
            "data_wait_s": self.data_wait_s,
            "data_wait_share": wait_share,
            "bottleneck": "data loading (decode + preprocess)" if self.data_wait_s > compute_s else "model",
            "raw": asdict(self),
        }


@dataclass
class ShardResult:
    records: list[ImageRecord] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    times: StageTimes = field(default_factory=StageTimes)
    proof_records: list[ImageRecord] = field(default_factory=list)  # the target engine in strict fp32 (not fp32)


# Images per process the structural proof runs on: a weight, export or layout fault shows on any image (run proves
# on its 6), and a second pass over a whole dataset would double the target's cost for nothing more.
PROOF_IMAGES = 32


def fp32_twin(target: Runner, precision: str) -> Runner | None:
    """For a target judged in another ``precision`` than strict fp32 (int8, bf16, fp16, fp32-fast), the same
    engine, device, layout and requests in fp32, called with TF32/HF32 off (the structural proof's runner, as
    ``run`` builds it); None for a strict fp32 target, which is judged by the fp32 criteria itself."""
    if precision == "fp32":
        return None
    options = {name: target.option_values[name] for name in ("streams", "micro_batch")}
    return create_runner(target.name, target.model, target.device, "fp32", target.channels_last,
                         threads=target.threads, cache_dir=target.cache_dir, **options)


def add_structural_proof(figures: dict[str, Any], runner_settings: dict[str, Any], shards: list[ShardResult],
                         precision: str, rounded: RoundedReference | None = None) -> None:
    """The structural proof of a target judged in ``precision`` (not strict fp32: int8, bf16, fp16, fp32-fast),
    the same engine in strict fp32 on the first images of each process, judged by the fp32 criteria, into the
    target's settings and the checks; its failure fails the evaluation, as it fails ``run``: the own error of int8,
    half precision or TF32/HF32 hides weight and export faults that fp32 sees (a conv weight 5 % off passed eval in
    bf16)."""
    if precision == "fp32":
        return
    records = [r for shard in shards for r in shard.proof_records]
    if not records:  # no readable image at all (a resumed run proves on the journaled ones: ShardEvaluator.run)
        runner_settings["structural_proof"] = {"status": "skipped", "reason": "no image to run it on"}
        return
    checks = verdict(records, criteria_for("fp32"), 0.0, 1.0, None)
    passed = all(c.passed for c in checks)
    runner_settings["structural_proof"] = {
        "status": "passed" if passed else "failed", "criteria": "fp32", "images": len(records),
        "reason": proof_reason(rounded).replace("strict IEEE fp32", f"strict IEEE fp32 on the first {PROOF_IMAGES} "
                                                "images of each process"),
        "failed_checks": [c.name for c in checks if not c.passed],
        "worst_sample_cosine": min(r.cosine for r in records), "worst_sample_rel_l2": max(r.rel_l2 for r in records),
        **({"reference_rounded_like_target_weights": rounded.to_json()} if rounded else {})}
    figures["checks"].append(vars(check("structural_proof", float(passed), ">=", 1.0,
                                        ", ".join(runner_settings["structural_proof"]["failed_checks"]) or None)))
    figures["passed"] = figures["passed"] and passed


def add_nonfinite_weights_check(figures: dict[str, Any], models: dict[str, torch.nn.Module]) -> None:
    """NaN/Inf in either side's weights fails the evaluation, as it fails ``run``, even where no image's output
    shows it (a NaN in a tensor the forward pass does not reach, or one that an activation clamps away)."""
    found = nonfinite_weights(models)
    where = nonfinite_weights_detail(found) if found else None
    figures["checks"].append(vars(check("nonfinite_weights", sum(found.values()), "<=", 0, where)))
    figures["passed"] = figures["passed"] and not found


def _proof_records(keys: list[str], labels: list[int | None], reference: np.ndarray, fp32: np.ndarray,
                   room: int) -> list[ImageRecord]:
    """The structural proof's records of a batch, at most ``room`` of them: PROOF_IMAGES per process, exactly."""
    return records_from_outputs(keys[:room], labels[:room], reference[:room], fp32[:room], criteria_for("fp32"))


class ShardEvaluator:
    """Runs the reference (or reads it from the cache) and the target on every batch of one shard."""

    def __init__(self, items: list[DatasetItem], reference: Runner, target: Runner, num_outputs: int,
                 criteria: Criteria, cache: ReferenceCache | None, journal: JournalWriter, skip_bad_images: bool,
                 proof: Runner | None = None, fp32_math: str = "strict", proof_reference: Runner | None = None):
        self.items = items
        self.reference = reference
        self.target = target
        self.proof = proof  # the target in strict fp32 (``fp32_twin``), run on the first PROOF_IMAGES images
        self.fp32_math = fp32_math  # the job's setting, restored after each strict-fp32 proof call
        # a half-precision --target-weights copy: the proof's reference, the reference model rounded like it
        # (proofs.rounded_reference), CPU eager fp32; None: the proof compares with the reference's outputs
        self.proof_reference = proof_reference
        self.num_outputs = num_outputs
        self.criteria = criteria
        self.cache = cache
        self.journal = journal
        self.skip_bad_images = skip_bad_images

    def run(self, loader: Any, progress: Any = None, on_batch: Callable[[int], None] | None = None,
            resumed: tuple[Any, list[DatasetItem]] | None = None) -> ShardResult:
        """Every batch of ``loader``; ``resumed``: a loader over images a resumed run takes from its journal, and
        those images, on which the structural proof runs when this run's own images give it fewer than it needs
        (a resumed int8 eval otherwise dropped its proof, and a failed verdict became a pass)."""
        if self.proof is None:
            return self._run(loader, progress, on_batch)
        with self.proof, self.proof_reference or contextlib.nullcontext():
            result = self._run(loader, progress, on_batch)
            if resumed is not None and len(result.proof_records) < PROOF_IMAGES:
                self._prove(*resumed, result)
            return result

    def _prove(self, loader: Any, items: list[DatasetItem], result: ShardResult) -> None:
        """The structural proof alone on journaled images (their records are already counted)."""
        assert self.proof is not None
        for batch in loader:
            if len(result.proof_records) >= PROOF_IMAGES:
                break
            if not batch.size:  # a bad image was said (or skipped) by the run that journaled the rest
                continue
            chosen = [items[i] for i in batch.indices]
            reference = self._reference(batch, chosen, StageTimes())  # not this run's measured stages
            target = self.target.infer(batch.tensor)[: batch.size].numpy()
            fp32 = self._strict_fp32(batch.tensor)[: batch.size].numpy()
            proof_reference = self._proof_reference(batch, reference)
            check_not_fp32(self.target.dtype, target, fp32, proof_reference)
            result.proof_records += _proof_records([it.key for it in chosen], [it.label for it in chosen],
                                                   proof_reference, fp32,
                                                   PROOF_IMAGES - len(result.proof_records))

    def _run(self, loader: Any, progress: Any, on_batch: Callable[[int], None] | None) -> ShardResult:
        result = ShardResult()
        times = result.times
        started = time.perf_counter()
        batches = iter(loader)
        for number in range(1, len(loader) + 1):
            waited = time.perf_counter()
            batch: LoadedBatch = next(batches)
            times.data_wait_s += time.perf_counter() - waited
            times.decode_s += batch.decode_s
            times.decoded += batch.size + len(batch.failures)
            for index, reason in batch.failures:
                if not self.skip_bad_images:
                    raise InputError(reason)
                _logger.warning("Skipping %s", reason)
                result.skipped.append({"path": self.items[index].key, "reason": reason})
            if batch.size:
                records = self._evaluate(batch, times, result)
                self.journal.append(records, [ReferenceCache.image_key(self.items[i].path) for i in batch.indices])
                result.records.extend(records)
                times.images += batch.size
            if progress is not None:
                progress.update(batch.size + len(batch.failures))
            if on_batch is not None:
                on_batch(number)
        times.loop_s = time.perf_counter() - started
        return result

    def _evaluate(self, batch: LoadedBatch, times: StageTimes, result: ShardResult) -> list[ImageRecord]:
        items = [self.items[i] for i in batch.indices]
        reference = self._reference(batch, items, times)
        started = time.perf_counter()
        target = self.target.infer(batch.tensor)
        self.target.synchronize()
        times.target_s += time.perf_counter() - started
        started = time.perf_counter()
        keys, labels = [it.key for it in items], [it.label for it in items]
        records = records_from_outputs(keys, labels, reference, target[: batch.size].numpy(), self.criteria)
        times.compare_s += time.perf_counter() - started
        if self.proof is not None and len(result.proof_records) < PROOF_IMAGES:
            fp32 = self._strict_fp32(batch.tensor)[: batch.size].numpy()
            proof_reference = self._proof_reference(batch, reference)
            check_not_fp32(self.target.dtype, target[: batch.size].numpy(), fp32, proof_reference)  # fp32 fallback
            result.proof_records += _proof_records(keys, labels, proof_reference, fp32,
                                                   PROOF_IMAGES - len(result.proof_records))
        return records

    def _proof_reference(self, batch: LoadedBatch, reference: np.ndarray) -> np.ndarray:
        """What the proof judges the batch against: the reference's outputs, or the rounded reference's."""
        if self.proof_reference is None:
            return reference
        return self.proof_reference.infer(batch.tensor)[: batch.size].numpy()

    def _strict_fp32(self, tensor: torch.Tensor) -> torch.Tensor:
        """The proof's outputs with TF32/HF32 off (as ``run``'s proof), whatever ``--fp32-math`` the target runs."""
        assert self.proof is not None
        apply_numeric_settings(self.target.device, "strict")
        try:
            return self.proof.infer(tensor)
        finally:
            apply_numeric_settings(self.target.device, self.fp32_math)

    def _reference(self, batch: LoadedBatch, items: list[DatasetItem], times: StageTimes) -> np.ndarray:
        """Reference outputs of the batch's real rows: cached ones read, the others computed in a padded batch."""
        out = np.empty((batch.size, self.num_outputs), np.float32)
        keys = [ReferenceCache.image_key(it.path) for it in items] if self.cache else []
        missing = []
        for row in range(batch.size):
            cached = self.cache.get(keys[row], self.num_outputs) if self.cache else None
            if cached is None:
                missing.append(row)
            else:
                out[row] = cached
        if not missing:
            return out
        inputs = batch.tensor
        if len(missing) < batch.size:  # same fixed batch size as without a cache, so the same bits
            inputs = torch.zeros_like(batch.tensor)
            inputs[: len(missing)] = batch.tensor[missing]
        started = time.perf_counter()
        computed = self.reference.infer(inputs)[: len(missing)].numpy()
        times.reference_s += time.perf_counter() - started
        times.reference_images += len(missing)
        out[missing] = computed
        if self.cache:
            for row, value in zip(missing, computed, strict=True):
                self.cache.put(keys[row], value)
        return out
