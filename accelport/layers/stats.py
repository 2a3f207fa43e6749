"""Per-module parity metrics accumulated batch by batch, equal to ``metrics.compare_arrays`` on all images at once.

A layer comparison sees one module output of one batch at a time and must not keep it, so it keeps sums instead
(element counts, sums of |d| and d², norms, dot products, maxima, counts within tolerance) and turns them into the
same ``TensorMetrics`` as the core comparison. Definitions are those of ``accelport.metrics`` (the per-sample floor
of the guarded relative error included), computed in float64 with torch because a network has ~100 module outputs
per image and numpy's version makes several passes per metric. ``tests/test_layers.py`` checks the equality.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from ..criteria import Check, Criteria, Evidence, judge
from ..metrics import _TINY, REL_FLOOR, TensorMetrics

_WITHIN = (1e-3, 5e-3, 1e-2)  # the share_within_* fields of TensorMetrics


def _row_dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-row dot products ``[N]`` through BLAS, without an ``[N, elements]`` temporary."""
    return torch.bmm(a.unsqueeze(1), b.unsqueeze(2)).view(-1)


def _rel_l2(sq_err: float, sq_ref: float) -> float:
    if sq_ref > 0:
        return math.sqrt(sq_err) / math.sqrt(sq_ref)
    return 0.0 if sq_err == 0 else math.inf


def _cosine(dot: float, sq_ref: float, sq_tgt: float) -> float:
    if sq_ref == 0 and sq_tgt == 0:
        return 1.0
    if sq_ref == 0 or sq_tgt == 0:
        return 0.0
    return max(-1.0, min(1.0, dot / (math.sqrt(sq_ref) * math.sqrt(sq_tgt))))


@dataclass
class ModuleStats:
    """Running sums for one module in one mode; ``metrics()`` gives the TensorMetrics over every image so far."""

    num_elements: int = 0
    num_finite: int = 0
    sum_abs: float = 0.0
    max_abs: float = 0.0
    sum_sq_err: float = 0.0
    sum_sq_ref: float = 0.0
    sum_sq_tgt: float = 0.0
    sum_dot: float = 0.0
    max_rel: float = 0.0
    within: list[int] = field(default_factory=lambda: [0] * len(_WITHIN))
    nonfinite_reference: int = 0
    nonfinite_target: int = 0
    new_nonfinite: int = 0  # per image max(0, NaN/Inf in target - in reference), summed: the core's check
    worst_rel_l2: float = 0.0  # worst image, as the core's max_sample_rel_l2 check
    worst_rel_l2_image: int | None = None
    worst_cosine: float = 1.0  # worst image, as the core's min_sample_cosine check
    worst_cosine_image: int | None = None
    shape_mismatch: str | None = None
    elem_rtol: float | None = None  # the criteria's element-wise tolerance, for the share rule
    within_rtol: int = 0  # elements within it

    def update(self, reference: torch.Tensor, target: torch.Tensor, first_image: int) -> None:
        """Add one batch: ``[N, elements]`` rows of both sides; ``first_image`` is the batch's first image index."""
        if reference.shape != target.shape:
            self.shape_mismatch = f"reference {tuple(reference.shape[1:])} vs target {tuple(target.shape[1:])}"
            return
        if reference.numel() == 0:
            return
        ref = reference.to(torch.float64, copy=True)  # private copies: the fast path works in place
        tgt = target.to(torch.float64, copy=True)
        diff = tgt - ref
        sums = torch.stack([_row_dot(diff, diff), _row_dot(ref, ref), _row_dot(tgt, tgt), _row_dot(ref, tgt)])
        if bool(torch.isfinite(sums).all()):  # then no element is NaN/Inf (they would propagate into the sums)
            count = ref.shape[1]
            finite_count = torch.full((ref.shape[0],), count, dtype=torch.int64)
            nonfinite_ref = nonfinite_tgt = torch.zeros_like(finite_count)
            abs_diff = diff.abs_()
            ref_abs = ref.abs_()
            floor = (REL_FLOOR * ref_abs.amax(1, keepdim=True)).clamp_min(_TINY)
            sum_abs, max_abs = float(abs_diff.sum()), float(abs_diff.max())
            rel = abs_diff.div_(torch.maximum(ref_abs, floor, out=ref_abs))
            max_rel = float(rel.max())
        else:  # NaN/Inf somewhere (or sums that overflow): the exact masked definitions of accelport.metrics
            ref_finite, tgt_finite = torch.isfinite(ref), torch.isfinite(tgt)
            finite = ref_finite & tgt_finite
            finite_count = finite.sum(1)
            nonfinite_ref, nonfinite_tgt = (~ref_finite).sum(1), (~tgt_finite).sum(1)
            r, t = torch.where(finite, ref, 0.0), torch.where(finite, tgt, 0.0)
            masked_diff = t - r
            sums = torch.stack([_row_dot(masked_diff, masked_diff), _row_dot(r, r), _row_dot(t, t), _row_dot(r, t)])
            sum_abs, max_abs = float(masked_diff.abs().sum()), float(masked_diff.abs().max())
            scale = torch.where(ref_finite, ref.abs(), 0.0).amax(1, keepdim=True)
            rel = (tgt - ref).abs() / torch.maximum(ref.abs(), (REL_FLOOR * scale).clamp_min(_TINY))
            rel_finite = rel[torch.isfinite(rel)]
            max_rel = float(rel_finite.max()) if rel_finite.numel() else 0.0

        count_per_row = ref.shape[1]
        self.num_elements += ref.numel()
        self.num_finite += int(finite_count.sum())
        self.sum_abs += sum_abs
        self.max_abs = max(self.max_abs, max_abs)
        self.max_rel = max(self.max_rel, max_rel)
        for i, rtol in enumerate(_WITHIN):  # NaN compares False: a non-finite element is never within
            self.within[i] += int(torch.count_nonzero(rel <= rtol))
        if self.elem_rtol is not None:
            self.within_rtol += int(torch.count_nonzero(rel <= self.elem_rtol))
        self.nonfinite_reference += int(nonfinite_ref.sum())
        self.nonfinite_target += int(nonfinite_tgt.sum())
        self.new_nonfinite += int((nonfinite_tgt - nonfinite_ref).clamp_min(0).sum())
        for offset, (sq_err, sq_ref, sq_tgt, dot) in enumerate(zip(*sums.tolist(), strict=True)):
            self.sum_sq_err, self.sum_sq_ref = self.sum_sq_err + sq_err, self.sum_sq_ref + sq_ref
            self.sum_sq_tgt, self.sum_dot = self.sum_sq_tgt + sq_tgt, self.sum_dot + dot
            rel_l2, cos = _rel_l2(sq_err, sq_ref), _cosine(dot, sq_ref, sq_tgt)
            if int(finite_count[offset]) != count_per_row:  # NaN/Inf in this image: no honest cosine or rel L2
                rel_l2, cos = math.nan, math.nan
            no_nan_yet = self.worst_rel_l2_image is None or not math.isnan(self.worst_rel_l2)  # NaN stays worst
            if no_nan_yet and (self.worst_rel_l2_image is None or not rel_l2 <= self.worst_rel_l2):
                self.worst_rel_l2, self.worst_rel_l2_image = rel_l2, first_image + offset
            if no_nan_yet and (self.worst_cosine_image is None or not cos >= self.worst_cosine):
                self.worst_cosine, self.worst_cosine_image = cos, first_image + offset

    def metrics(self) -> TensorMetrics:
        """The core comparison's metrics over every element of every image seen."""
        n, finite = self.num_elements, self.num_finite
        # as metrics.compare_arrays: NaN/Inf anywhere, every magnitude NaN (no "cosine 1", no "max abs diff 0")
        honest = 1.0 if finite == n else math.nan
        return TensorMetrics(
            num_elements=n,
            max_abs_diff=honest * self.max_abs,
            mean_abs_diff=honest * (self.sum_abs / finite if finite else 0.0),
            max_rel_err=honest * self.max_rel,
            rel_l2_err=honest * _rel_l2(self.sum_sq_err, self.sum_sq_ref),
            rmse=honest * (math.sqrt(self.sum_sq_err / finite) if finite else 0.0),
            cosine_similarity=honest * _cosine(self.sum_dot, self.sum_sq_ref, self.sum_sq_tgt),
            share_within_1e_3=self.within[0] / n if n else 1.0,
            share_within_5e_3=self.within[1] / n if n else 1.0,
            share_within_1e_2=self.within[2] / n if n else 1.0,
            nonfinite_reference=self.nonfinite_reference,
            nonfinite_target=self.nonfinite_target,
        )

    def divergence(self, criteria: Criteria) -> str | None:
        """Why this output fails the rules that fail a run (``criteria.judge``), or None when it passes."""
        if self.shape_mismatch:
            return f"output shape differs ({self.shape_mismatch})"
        evidence = Evidence(
            worst_cosine=self.worst_cosine, worst_rel_l2=self.worst_rel_l2,
            within_share=self.within_rtol / self.num_elements if self.num_elements and self.elem_rtol else 1.0,
            nonfinite_reference=self.nonfinite_reference, nonfinite_target=self.nonfinite_target)
        failed = [c for c in judge(criteria, evidence) if not c.passed]
        return "; ".join(describe_check(c) for c in failed) or None


def describe_check(check: Check) -> str:
    """``name value (limit op threshold)``; a cosine with enough digits to differ from 1 (0.9999871, not 1)."""
    value = f"{check.value:.7g}" if "cosine" in check.name else f"{check.value:.4g}"
    return f"{check.name} {value} (limit {check.op} {check.threshold:g})"
