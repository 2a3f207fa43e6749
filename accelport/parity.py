"""Compare a target's outputs with the CPU reference's and judge them: sees only arrays, never runners.

The judge itself is ``criteria.judge``; this module turns whole output arrays (and, in half precision, the outputs
of a same-precision baseline) into its ``Evidence``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from .criteria import BASELINE_RTOL, RATIO_FLOORS, Check, Criteria, Evidence, judge, ratio, worst_index
from .formatting import listed
from .metrics import (
    TensorMetrics,
    TopKAgreement,
    compare_arrays,
    compare_per_sample,
    relative_errors,
    share_within,
    topk_agreement,
    topk_indices,
)

BASELINE_DESCRIPTIONS = {
    "half": "CPU eager model in the target's dtype, against the same fp32 reference",
    "fp32-fast": "CPU eager fp32 model with TF32 emulation (conv/linear weights and inputs rounded to a 10-bit "
                 "mantissa), against the same fp32 reference",
}


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
    tie_tolerance: float | None = None  # logits a correct implementation may move: the near-tie allowance
    baseline_rel_l2: float | None = None  # the same-precision baseline's error, when there is one
    baseline_l2_ratio: float | None = None
    outside_share: float | None = None  # share of elements whose relative error exceeds BASELINE_RTOL
    baseline_outside_share: float | None = None
    baseline_outside_ratio: float | None = None


@dataclass(frozen=True)
class ParityResult:
    overall: TensorMetrics
    samples: list[SampleParity]
    criteria: Criteria
    checks: list[Check]
    is_classifier: bool
    baseline: TensorMetrics | None = None
    # how far the best single reference output, returned for every image, would be from the others (worst image rel
    # L2); under max_rel_l2, a target that ignored its input would pass. None with fewer than two images
    constant_output_rel_l2: float | None = None
    # images whose target output is exactly zero where the reference's is not (an int8 program whose tiny
    # activations all rounded to zero: the metrics showed cosine 0 and rel L2 1 and nothing said why)
    zero_target: list[str] = field(default_factory=list)

    @property
    def input_blind(self) -> bool | None:
        """The reference barely depends on these images: one of its outputs, given for all of them, would pass the
        rel-L2 limit, and the same-precision baseline's ratio limit where there is one (its smallest allowance).
        None: not judged (one image, or non-finite reference outputs)."""
        if self.constant_output_rel_l2 is None:
            return None
        limit = self.criteria.max_rel_l2
        allowances = [s.baseline_rel_l2 for s in self.samples if s.baseline_rel_l2 is not None]
        if allowances:
            limit = min(limit, self.criteria.max_baseline_ratio * min(allowances))
        return self.constant_output_rel_l2 < limit

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

    @property
    def baseline_description(self) -> str:
        """Which correct implementation of the precision the baseline is (half precision or TF32 emulation)."""
        return BASELINE_DESCRIPTIONS.get(self.criteria.precision, BASELINE_DESCRIPTIONS["half"])

    def to_json(self) -> dict[str, Any]:
        n = len(self.samples)
        cosines = [s.metrics.cosine_similarity for s in self.samples]
        rel_l2s = [s.metrics.rel_l2_err for s in self.samples]
        data = {
            "passed": self.passed,
            "overall": self.overall.to_json(),
            "worst_sample_cosine": cosines[worst_index(cosines, worst_is_low=True)],
            "worst_sample_rel_l2": rel_l2s[worst_index(rel_l2s, worst_is_low=False)],
            "top1_agreement": None if not self.is_classifier else (self._count("top1_match") or 0) / n,
            "top5_agreement": None if not self.is_classifier else (self._count("top5_match") or 0) / n,
            "top1_near_ties": self._count("top1_near_tie"),
            "top5_near_ties": self._count("top5_near_tie"),
            "real_top1_mismatches": None if not self.is_classifier else sum(
                not s.top1_match and not s.top1_near_tie for s in self.samples),
            "criteria": self.criteria.to_json(),
            "checks": [vars(c) for c in self.checks],
            "constant_output_rel_l2": self.constant_output_rel_l2,
            **({"zero_target_images": self.zero_target} if self.zero_target else {}),
        }
        if self.baseline is not None:
            data["baseline"] = {
                "description": self.baseline_description,
                "overall": self.baseline.to_json(),
                "outside_rtol": BASELINE_RTOL,
                "per_image": [{"target_rel_l2": s.metrics.rel_l2_err, "baseline_rel_l2": s.baseline_rel_l2,
                               "rel_l2_ratio": s.baseline_l2_ratio, "target_outside": s.outside_share,
                               "baseline_outside": s.baseline_outside_share,
                               "outside_ratio": s.baseline_outside_ratio} for s in self.samples],
            }
        return data


def tie_tolerance(reference: np.ndarray, max_rel_l2: float, baseline_bound: float | None = None) -> float:
    """How far apart two classes may be and still swap in a correct implementation of this precision.

    With a same-precision baseline, ``baseline_bound`` is the most one logit may move (``max_baseline_ratio`` x
    the baseline's largest error on this image); without one, an error at the criteria's rel-L2 bound spread evenly
    over the outputs (``max_rel_l2`` x their RMS). Either class may move by it, so twice that. Never the target's
    own error: a broken target would excuse its own flips.
    """
    if baseline_bound is None:
        finite = reference[np.isfinite(reference)]
        baseline_bound = max_rel_l2 * (float(np.sqrt(np.mean(finite**2))) if finite.size else 0.0)
    return 2.0 * baseline_bound


def _topk(ref: np.ndarray, tgt: np.ndarray, tolerance: float) -> tuple[TopKAgreement, TopKAgreement]:
    if not (np.isfinite(ref).all() and np.isfinite(tgt).all()):  # NaN sorts anywhere: never a match or a tie
        return TopKAgreement(1, False, False), TopKAgreement(5, False, False)
    return topk_agreement(ref, tgt, 1, tolerance), topk_agreement(ref, tgt, 5, tolerance)


def _outside(reference: np.ndarray, other: np.ndarray) -> np.ndarray:
    errors = relative_errors(reference, other)
    return np.where(np.isfinite(errors), errors > BASELINE_RTOL, True).mean(axis=1)


def _nonfinite_where(counts: Sequence[int], names: Sequence[str]) -> str | None:
    found = [f"{name} ({count})" for name, count in zip(names, counts, strict=True) if count]
    return None if not found else f"NaN/Inf in {len(found)} image(s): " + listed(found)


def zero_target_cause(precision: str, random_init: bool) -> str:
    """Why a target may output only zeros where the reference does not (bench and eval say it alike): int8's
    quantiser rounds small activations away; "" for other precisions."""
    if precision != "int8":
        return ""
    return "; int8 rounds activations below its scales to zero" + (
        ": random-init weights make them tiny, use real --weights" if random_init else "")


def zero_target_caution(count: int, total: int, which: str, precision: str, random_init: bool) -> str | None:
    """run's, layers' and eval's caution when the target returned all zeros where the reference did not (``which``:
    the images named, or some of them): the metrics alone read cosine 0, which says nothing of why."""
    if not count:
        return None
    return (f"caution: the target's outputs are all zero for {count} of {total} image(s) where the reference's are "
            f"not ({which}){zero_target_cause(precision, random_init)}")


def zero_reference_where(zeros: Sequence[str], total: int) -> str | None:
    """The detail of a failing ``zero_reference_outputs`` check (run, bench, layers and eval say it alike)."""
    if not zeros:
        return None
    return (f"all zero for {len(zeros)} of {total} image(s): {listed(zeros)}; a match with zeros proves nothing "
            "(timm zero-initialises some classifiers on a random init, e.g. MLP-Mixer's and Sequencer's: load real "
            "weights, or compare the features before the head with --features)")


def compare_outputs(reference: np.ndarray, target: np.ndarray, criteria: Criteria, is_classifier: bool,
                    baseline: np.ndarray | None = None, sample_names: Sequence[str] | None = None,
                    nonfinite_weights: dict[str, int] | None = None,
                    judge_zero_reference: bool = False, sample_images: Sequence[int] | None = None) -> ParityResult:
    """Metrics overall and per sample, top-k agreement with near-ties, and the verdict under ``criteria``.

    ``baseline``: the outputs of a correct implementation of the target's precision (half precision, fp32-fast), which
    adds the baseline-ratio checks and sets the near-tie allowance. ``nonfinite_weights``: tensor name -> count
    of NaN/Inf found in the loaded weights (an empty dict when they were inspected and are clean).
    ``judge_zero_reference``: fail images whose reference output is exactly zero (a run's verdict on the model's
    output; not the structural proof's or a fault's, whose reference is the same and already judged).
    ``sample_images``: which image each row is, where a padded batch repeats some (bench): a count of images
    (``real_top1_mismatches``, judged against ``max_top1_mismatches``) counts each image once, whatever its repeats.
    """
    reference = np.asarray(reference, np.float64)
    target = np.asarray(target, np.float64)
    names = list(sample_names) if sample_names is not None else [f"image {i}" for i in range(len(reference))]
    per_sample = compare_per_sample(reference, target)
    base_samples = compare_per_sample(reference, np.asarray(baseline, np.float64)) if baseline is not None else None
    outside = _outside(reference, target)
    base_outside = _outside(reference, np.asarray(baseline, np.float64)) if baseline is not None else None
    samples = []
    for i, (ref, tgt, metrics) in enumerate(zip(reference, target, per_sample, strict=True)):
        base = base_samples[i] if base_samples is not None else None
        extra: dict[str, Any] = {"outside_share": float(outside[i])}
        if base is not None and base_outside is not None:
            extra.update(baseline_rel_l2=base.rel_l2_err, baseline_outside_share=float(base_outside[i]),
                         baseline_l2_ratio=ratio(metrics.rel_l2_err, base.rel_l2_err, "rel_l2"),
                         baseline_outside_ratio=ratio(outside[i], base_outside[i], "outside"))
        if is_classifier:
            tolerance = tie_tolerance(ref, criteria.max_rel_l2,
                                      None if base is None else criteria.max_baseline_ratio * base.max_abs_diff)
            top1, top5 = _topk(ref, tgt, tolerance)
            samples.append(SampleParity(metrics, topk_indices(ref), topk_indices(tgt), top1.match, top5.match,
                                        top1.near_tie, top5.near_tie, tie_tolerance=tolerance, **extra))
        else:
            samples.append(SampleParity(metrics, None, None, None, None, None, None, **extra))
    images = list(sample_images) if sample_images is not None else list(range(len(reference)))
    evidence = _evidence(reference, target, criteria, samples, names, images, is_classifier, nonfinite_weights)
    if judge_zero_reference:
        zeros = [name for name, ref in zip(names, reference, strict=True) if not np.any(ref)]
        where = {**(evidence.where or {}), "zero_reference_outputs": zero_reference_where(zeros, len(names))}
        evidence = replace(evidence, zero_reference_samples=len(zeros), where=where)
    zero_target = [name for name, ref, tgt in zip(names, reference, target, strict=True)
                   if not np.any(tgt) and np.any(ref)]
    return ParityResult(compare_arrays(reference, target), samples, criteria, judge(criteria, evidence),
                        is_classifier, compare_arrays(reference, baseline) if baseline is not None else None,
                        constant_output_rel_l2(reference), zero_target)


def constant_output_rel_l2(reference: np.ndarray, max_answers: int = 64) -> float | None:
    """The worst-image rel L2 of the best constant answer: one image's reference output given for every image (the
    best of the first ``max_answers`` images; fewer tried can only make it larger, never a false alarm). Random-init
    networks often barely depend on their input (ConvMixer: 7e-8 here); a target that ignores its input then passes
    any output check, which a run should say."""
    rows = np.asarray(reference, np.float64).reshape(len(reference), -1)
    if len(rows) < 2 or not np.isfinite(rows).all():
        return None
    norms = np.linalg.norm(rows, axis=1)
    best = np.inf
    for answer in rows[:max_answers]:
        distances = np.linalg.norm(rows - answer, axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            relative = np.where(norms > 0, distances / norms, np.where(distances > 0, np.inf, 0.0))
        best = min(best, float(relative.max()))
    return best


def baseline_ratios(samples: Sequence[SampleParity]) -> tuple[float | None, float | None]:
    """The target's error over a correct same-precision implementation's, **mean over the images**: rel L2, and the
    share of elements outside ``BASELINE_RTOL`` (None, None without a baseline).

    Not the worst image's ratio: two correct implementations round differently on each image, so one image's
    ratio scatters widely (random-init fastvit_t8 on OpenVINO bf16: 0.26 to 2.53 over six images, 0.95 on their
    means), and the worst of N images grows with N. A weight or layout fault raises the error on every image, so the
    mean keeps it in view (docs/verdict.md section 1)."""
    judged = [s for s in samples if s.baseline_rel_l2 is not None and s.baseline_outside_share is not None]
    if not judged:
        return None, None

    def of_means(target: list[Any], baseline: list[Any], kind: str) -> float:
        # each image's baseline floored first (as its own ratio is), so the ratio of the means is never above the
        # largest per-image ratio: what passed image by image still passes
        floored = [max(value, RATIO_FLOORS[kind]) for value in baseline]
        return ratio(float(np.mean(target)), float(np.mean(floored)), kind)

    return (of_means([s.metrics.rel_l2_err for s in judged], [s.baseline_rel_l2 for s in judged], "rel_l2"),
            of_means([s.outside_share for s in judged], [s.baseline_outside_share for s in judged], "outside"))


def _worst_ratio_where(samples: Sequence[SampleParity], names: Sequence[str], field: str) -> str:
    values = [getattr(s, field) for s in samples]
    worst = worst_index([np.nan if v is None else v for v in values], worst_is_low=False)
    return f"mean over {len(samples)} image(s); worst image {names[worst]} ({values[worst]:.3g})"


def nonfinite_weights_detail(found: dict[str, int]) -> str:
    """The ``nonfinite_weights`` check's detail: each tensor holding NaN/Inf, with its count."""
    named = [f"{name} ({count})" for name, count in found.items()]
    return f"NaN/Inf in {len(named)} tensor(s): " + listed(named)


def _evidence(reference: np.ndarray, target: np.ndarray, criteria: Criteria, samples: list[SampleParity],
              names: list[str], images: list[int], is_classifier: bool,
              nonfinite_weights: dict[str, int] | None) -> Evidence:
    """The judge's input, with where each failure sits (image names, weight tensors)."""
    cosines = [s.metrics.cosine_similarity for s in samples]
    rel_l2s = [s.metrics.rel_l2_err for s in samples]
    where = {
        "min_sample_cosine": names[worst_index(cosines, worst_is_low=True)],
        "max_sample_rel_l2": names[worst_index(rel_l2s, worst_is_low=False)],
        "nonfinite_reference": _nonfinite_where([s.metrics.nonfinite_reference for s in samples], names),
        "nonfinite_target": _nonfinite_where([s.metrics.nonfinite_target for s in samples], names),
    }
    if nonfinite_weights:
        where["nonfinite_weights"] = nonfinite_weights_detail(nonfinite_weights)
    real = None
    if is_classifier:
        flips = [i for i, s in enumerate(samples) if not s.top1_match and not s.top1_near_tie]
        real = len({images[i] for i in flips})
        where["real_top1_mismatches"] = listed([names[i] for i in flips]) or None
    l2_ratio, outside_ratio = baseline_ratios(samples)
    if l2_ratio is not None:
        where["max_baseline_rel_l2_ratio"] = _worst_ratio_where(samples, names, "baseline_l2_ratio")
        where["max_baseline_outside_ratio"] = _worst_ratio_where(samples, names, "baseline_outside_ratio")
    return Evidence(
        worst_cosine=cosines[worst_index(cosines, worst_is_low=True)],
        worst_rel_l2=rel_l2s[worst_index(rel_l2s, worst_is_low=False)],
        within_share=share_within(reference, target, criteria.elem_rtol),
        nonfinite_reference=sum(s.metrics.nonfinite_reference for s in samples),
        nonfinite_target=sum(s.metrics.nonfinite_target for s in samples),
        real_top1_mismatches=real,
        baseline_l2_ratio=l2_ratio,
        baseline_outside_ratio=outside_ratio,
        nonfinite_weights=None if nonfinite_weights is None else sum(nonfinite_weights.values()),
        where=where,
    )
