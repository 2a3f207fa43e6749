"""One process's share of the evaluation: stream batches, run reference and target, keep small per-image records.

Each stage is timed on its own so the report can say what limits the throughput: the decoding and
preprocessing time is measured inside the loader workers, the models' time around ``runner.infer`` with the
device synchronised, and the loop's wait for the next batch shows whether the workers keep up.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from ..criteria import Criteria
from ..errors import InputError
from ..runners import Runner
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
        def rate(images: int, seconds: float) -> float:
            return images / seconds if seconds > 0 else 0.0

        compute_s = self.reference_s + self.target_s + self.compare_s
        stages = [
            {"stage": "whole pipeline" + (f" ({world_size} processes)" if world_size > 1 else ""),
             "images_per_s": rate(self.images, self.loop_s), "seconds": self.loop_s},
            {"stage": "decode + preprocess (one loader process)", "images_per_s": rate(self.decoded, self.decode_s),
             "seconds": self.decode_s},
            {"stage": "reference model, CPU fp32 (cache misses only)",
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


class ShardEvaluator:
    """Runs the reference (or reads it from the cache) and the target on every batch of one shard."""

    def __init__(self, items: list[DatasetItem], reference: Runner, target: Runner, num_outputs: int,
                 criteria: Criteria, cache: ReferenceCache | None, journal: JournalWriter, skip_bad_images: bool):
        self.items = items
        self.reference = reference
        self.target = target
        self.num_outputs = num_outputs
        self.criteria = criteria
        self.cache = cache
        self.journal = journal
        self.skip_bad_images = skip_bad_images

    def run(self, loader: Any, progress: Any = None, on_batch: Callable[[int], None] | None = None) -> ShardResult:
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
                records = self._evaluate(batch, times)
                self.journal.append(records, [ReferenceCache.image_key(self.items[i].path) for i in batch.indices])
                result.records.extend(records)
                times.images += batch.size
            if progress is not None:
                progress.update(batch.size + len(batch.failures))
            if on_batch is not None:
                on_batch(number)
        times.loop_s = time.perf_counter() - started
        return result

    def _evaluate(self, batch: LoadedBatch, times: StageTimes) -> list[ImageRecord]:
        items = [self.items[i] for i in batch.indices]
        reference = self._reference(batch, items, times)
        started = time.perf_counter()
        target = self.target.infer(batch.tensor)
        self.target.synchronize()
        times.target_s += time.perf_counter() - started
        started = time.perf_counter()
        records = records_from_outputs([it.key for it in items], [it.label for it in items], reference,
                                       target[: batch.size].numpy(), self.criteria)
        times.compare_s += time.perf_counter() - started
        return records

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
