"""Compare a target's outputs with the CPU reference's and judge them: sees only arrays, never runners."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .criteria import Check, Criteria, evaluate
from .metrics import TensorMetrics, compare_arrays, compare_per_sample, topk_agreement, topk_indices


@dataclass(frozen=True)
class SampleParity:
    """One image: its metrics and, for a classifier, the top-5 of both sides and their agreement."""

    metrics: TensorMetrics
    reference_top5: list[int] | None
    target_top5: list[int] | None
    top1_match: bool | None
    top5_match: bool | None
    top1_near_tie: bool | None
    top5_near_tie: bool | None


@dataclass(frozen=True)
class ParityResult:
    overall: TensorMetrics
    samples: list[SampleParity]
    criteria: Criteria
    checks: list[Check]
    is_classifier: bool

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    def _count(self, attribute: str) -> int | None:
        if not self.is_classifier:
            return None
        return sum(bool(getattr(s, attribute)) for s in self.samples)

    @property
    def top1_match(self) -> bool | None:
        return None if not self.is_classifier else all(s.top1_match for s in self.samples)

    @property
    def top5_match(self) -> bool | None:
        return None if not self.is_classifier else all(s.top5_match for s in self.samples)

    def to_json(self) -> dict[str, Any]:
        n = len(self.samples)
        return {
            "passed": self.passed,
            "overall": self.overall.to_json(),
            "worst_sample_cosine": min(s.metrics.cosine_similarity for s in self.samples),
            "worst_sample_rel_l2": max(s.metrics.rel_l2_err for s in self.samples),
            "top1_agreement": None if not self.is_classifier else self._count("top1_match") / n,
            "top5_agreement": None if not self.is_classifier else self._count("top5_match") / n,
            "top1_near_ties": self._count("top1_near_tie"),
            "top5_near_ties": self._count("top5_near_tie"),
            "criteria": self.criteria.to_json(),
            "checks": [vars(c) for c in self.checks],
        }


def compare_outputs(reference: np.ndarray, target: np.ndarray, criteria: Criteria, is_classifier: bool) -> ParityResult:
    """Metrics overall and per sample, top-k agreement with near-ties, and the verdict under ``criteria``."""
    reference = np.asarray(reference, np.float64)
    target = np.asarray(target, np.float64)
    per_sample = compare_per_sample(reference, target)
    samples = []
    for ref, tgt, metrics in zip(reference, target, per_sample, strict=True):
        if is_classifier:
            top1 = topk_agreement(ref, tgt, 1, metrics.max_abs_diff)
            top5 = topk_agreement(ref, tgt, 5, metrics.max_abs_diff)
            samples.append(SampleParity(metrics, topk_indices(ref), topk_indices(tgt), top1.match, top5.match,
                                        top1.near_tie, top5.near_tie))
        else:
            samples.append(SampleParity(metrics, None, None, None, None, None, None))
    real_top1 = sum(not s.top1_match and not s.top1_near_tie for s in samples) if is_classifier else None
    checks = evaluate(criteria, reference, target, per_sample, real_top1)
    return ParityResult(compare_arrays(reference, target), samples, criteria, checks, is_classifier)
