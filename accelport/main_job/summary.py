"""summary.json: the original report's top-level fields, plus everything needed to trust and reproduce them.

The schema is documented in README.md ("summary.json"); bump SCHEMA_VERSION on any incompatible change.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from ..job.header import REFERENCE, DocumentHeader, model_record, target_record, weights_fields, weights_record

if TYPE_CHECKING:
    from ..job.context import JobContext
    from ..latency import LatencyReport
    from ..parity import ParityResult
    from ..preprocess import ImageBatch, ImageStream

SCHEMA_VERSION = 2  # 2: honest NaN metrics, near-ties from the baseline, nonfinite checks (README)


@functools.lru_cache(maxsize=1)
def _imagenet_info():
    from timm.data import ImageNetInfo

    return ImageNetInfo()


def class_label(index: int, num_classes: int) -> str:
    """ImageNet-1k description (timm ships them) for 1000-class models; the index otherwise."""
    if num_classes == 1000:
        return _imagenet_info().index_to_description(index)
    return str(index)


def build_summary(
    job: JobContext,
    batch: ImageBatch | ImageStream,
    runner_settings: dict[str, Any],
    parity: ParityResult,
    latency: LatencyReport,
    output_shape: list[int],
) -> dict[str, Any]:
    weights = job.loaded.weights
    overall = parity.overall
    header = DocumentHeader.of(SCHEMA_VERSION, job, model=model_record(job), reference=REFERENCE,
                               target=target_record(job, runner_settings, parity.criteria.precision))
    return {
        # The original Ascend report's fields, same names and meaning.
        "status": "passed" if parity.passed else "failed",
        **weights_fields(weights),
        "output_shape": output_shape,
        "max_abs_diff": overall.max_abs_diff,
        "mean_abs_diff": overall.mean_abs_diff,
        "cosine_similarity": overall.cosine_similarity,
        "top1_match": parity.top1_match,
        "top5_match": parity.top5_match,
        "match_within_1_percent": overall.share_within_1e_2 >= 0.99,
        "latency_ms": latency.compute.mean_ms,
        # Added by accelport.
        **header.to_json(),
        "weight_sha256": weights.sha256,
        "weights": weights_record(weights),
        "inputs": {
            "num_images": len(batch.paths),
            "skipped": [{"path": str(p), "reason": r} for p, r in batch.skipped],
        },
        "criteria": parity.criteria.to_json(),
        "parity": parity.to_json(),
        "latency": latency.to_json(),
        "samples": _samples(batch, parity, job.loaded.num_classes),
    }


def _samples(batch: ImageBatch | ImageStream, parity: ParityResult, num_classes: int) -> list[dict[str, Any]]:
    """Per image: its metrics and, for a classifier, both sides' top-5 with labels and agreement."""
    labels = functools.partial(class_label, num_classes=num_classes)
    samples = []
    for path, sample in zip(batch.paths, parity.samples, strict=True):
        entry: dict[str, Any] = {"path": str(path), "metrics": sample.metrics.to_json()}
        if parity.is_classifier:
            entry.update(
                reference_top5=sample.reference_top5,
                target_top5=sample.target_top5,
                reference_top5_labels=[labels(i) for i in sample.reference_top5 or ()],
                target_top5_labels=[labels(i) for i in sample.target_top5 or ()],
                top1_match=sample.top1_match,
                top5_match=sample.top5_match,
                top1_near_tie=sample.top1_near_tie,
                top5_near_tie=sample.top5_near_tie,
            )
        samples.append(entry)
    return samples
