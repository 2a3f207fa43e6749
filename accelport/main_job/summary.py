"""summary.json: the original report's top-level fields, plus everything needed to trust and reproduce them.

The schema is documented in README.md ("summary.json"); bump SCHEMA_VERSION on any incompatible change.
"""

from __future__ import annotations

import datetime as dt
import functools
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import torch

from ..environment import describe_environment

if TYPE_CHECKING:
    from ..devices import NumericSettings
    from ..latency import LatencyReport
    from ..models import LoadedModel
    from ..parity import ParityResult
    from ..preprocess import DataConfig, ImageBatch
    from .config import RunConfig

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
    config: RunConfig,
    loaded: LoadedModel,
    data_config: DataConfig,
    batch: ImageBatch,
    device: torch.device,
    numeric: NumericSettings,
    runner_settings: dict[str, Any],
    parity: ParityResult,
    latency: LatencyReport,
    output_shape: list[int],
    wall_s: float,
) -> dict[str, Any]:
    weights = loaded.weights
    overall = parity.overall
    labels = functools.partial(class_label, num_classes=loaded.num_classes)
    samples = []
    for path, sample in zip(batch.paths, parity.samples, strict=True):
        entry: dict[str, Any] = {"path": str(path), "metrics": sample.metrics.to_json()}
        if parity.is_classifier:
            entry.update(
                reference_top5=sample.reference_top5,
                target_top5=sample.target_top5,
                reference_top5_labels=[labels(i) for i in sample.reference_top5],
                target_top5_labels=[labels(i) for i in sample.target_top5],
                top1_match=sample.top1_match,
                top5_match=sample.top5_match,
                top1_near_tie=sample.top1_near_tie,
                top5_near_tie=sample.top5_near_tie,
            )
        samples.append(entry)
    return {
        # The original Ascend report's fields, same names and meaning.
        "status": "passed" if parity.passed else "failed",
        "pretrained_used": weights.pretrained_used,
        "local_weight_used": weights.local_weight_used,
        "weight_path": weights.path,
        "output_shape": output_shape,
        "max_abs_diff": overall.max_abs_diff,
        "mean_abs_diff": overall.mean_abs_diff,
        "cosine_similarity": overall.cosine_similarity,
        "top1_match": parity.top1_match,
        "top5_match": parity.top5_match,
        "match_within_1_percent": overall.share_within_1e_2 >= 0.99,
        "latency_ms": latency.compute.mean_ms,
        # Added by accelport.
        "schema_version": SCHEMA_VERSION,
        "created_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "wall_time_s": round(wall_s, 3),
        "weight_sha256": weights.sha256,
        "weights": asdict(weights) | {"pretrained_used": weights.pretrained_used},
        "model": {
            "name": loaded.name,
            "head": loaded.head,
            "num_params": loaded.num_params,
            "num_classes": loaded.num_classes,
            "data_config": data_config.to_json(),
        },
        "target": {
            "device_requested": config.device,
            "device": str(device),
            "precision": parity.criteria.precision,
            "fp32_math": numeric.fp32_math,
            "numeric_settings": numeric.effective,
            **runner_settings,
        },
        "reference": {"device": "cpu", "runtime": "eager", "dtype": "fp32"},
        "environment": describe_environment(device),
        "inputs": {
            "num_images": len(batch.paths),
            "skipped": [{"path": str(p), "reason": r} for p, r in batch.skipped],
        },
        "criteria": parity.criteria.to_json(),
        "parity": parity.to_json(),
        "latency": latency.to_json(),
        "samples": samples,
    }
