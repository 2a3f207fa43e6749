"""Parity metrics: pure functions over a reference and a target array, in float64.

Element-wise relative error is guarded against a near-zero reference (logits often are): each element is
divided by ``max(|ref|, floor)`` with ``floor = REL_FLOOR * max|ref|`` of its own sample, so an element
far below the sample's scale is judged by its absolute error relative to that scale instead of exploding.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

REL_FLOOR = 1e-3  # fraction of a sample's max |ref| below which relative error uses the floor
_TINY = 1e-30


@dataclass(frozen=True)
class TensorMetrics:
    """How far ``target`` is from ``reference``; every field is defined in the README."""

    num_elements: int
    max_abs_diff: float
    mean_abs_diff: float
    max_rel_err: float
    rel_l2_err: float
    rmse: float
    cosine_similarity: float
    share_within_1e_3: float
    share_within_5e_3: float
    share_within_1e_2: float
    nonfinite_reference: int
    nonfinite_target: int

    def to_json(self) -> dict[str, float | int]:
        return asdict(self)


def _rows(array: np.ndarray) -> np.ndarray:
    array = np.asarray(array, dtype=np.float64)
    return array.reshape(array.shape[0], -1) if array.ndim > 1 else array.reshape(1, -1)


def relative_errors(reference: np.ndarray, target: np.ndarray) -> np.ndarray:
    """``|t - r| / max(|r|, REL_FLOOR * max|r| of the sample)``, per element, shape ``[N, elements]``."""
    ref, tgt = _rows(reference), _rows(target)
    scale = np.nanmax(np.where(np.isfinite(ref), np.abs(ref), 0.0), axis=1, keepdims=True)
    denominator = np.maximum(np.abs(ref), np.maximum(REL_FLOOR * scale, _TINY))
    return np.abs(tgt - ref) / denominator


def share_within(reference: np.ndarray, target: np.ndarray, rtol: float) -> float:
    """Share of elements whose guarded relative error is at most ``rtol`` (non-finite ones count as outside)."""
    errors = relative_errors(reference, target)
    return float(np.mean(np.where(np.isfinite(errors), errors <= rtol, False)))


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two flattened arrays; 1.0 when both are all zeros, 0.0 when only one is."""
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    norm_a, norm_b = np.linalg.norm(a), np.linalg.norm(b)
    if norm_a == 0.0 and norm_b == 0.0:
        return 1.0
    if norm_a == 0.0 or norm_b == 0.0:
        return 0.0
    return float(np.clip(np.dot(a, b) / (norm_a * norm_b), -1.0, 1.0))


def compare_arrays(reference: np.ndarray, target: np.ndarray) -> TensorMetrics:
    """All metrics over every element of the two arrays (any shape, equal shapes)."""
    ref, tgt = np.asarray(reference, np.float64), np.asarray(target, np.float64)
    if ref.shape != tgt.shape:
        raise ValueError(f"shape mismatch: reference {ref.shape} vs target {tgt.shape}")
    finite = np.isfinite(ref) & np.isfinite(tgt)
    r, t = ref[finite], tgt[finite]
    diff = np.abs(t - r)
    rel = relative_errors(ref, tgt)
    rel_finite = rel[np.isfinite(rel)]
    ref_norm = np.linalg.norm(r)
    err_norm = np.linalg.norm(t - r)
    # NaN/Inf anywhere: every magnitude is NaN, never a "cosine 1" or "max abs diff 0" from the finite rest (the
    # nonfinite_* counts say how many); an empty array has no difference at all
    honest = 1.0 if finite.all() else float("nan")
    return TensorMetrics(
        num_elements=int(ref.size),
        max_abs_diff=honest * (float(diff.max()) if diff.size else 0.0),
        mean_abs_diff=honest * (float(diff.mean()) if diff.size else 0.0),
        max_rel_err=honest * (float(rel_finite.max()) if rel_finite.size else 0.0),
        rel_l2_err=honest * (float(err_norm / ref_norm) if ref_norm > 0 else (0.0 if err_norm == 0 else float("inf"))),
        rmse=honest * (float(np.sqrt(np.mean((t - r) ** 2))) if diff.size else 0.0),
        cosine_similarity=honest * cosine(r, t),
        share_within_1e_3=share_within(ref, tgt, 1e-3),
        share_within_5e_3=share_within(ref, tgt, 5e-3),
        share_within_1e_2=share_within(ref, tgt, 1e-2),
        nonfinite_reference=int((~np.isfinite(ref)).sum()),
        nonfinite_target=int((~np.isfinite(tgt)).sum()),
    )


def compare_per_sample(reference: np.ndarray, target: np.ndarray) -> list[TensorMetrics]:
    """``compare_arrays`` for each sample along the leading (batch) axis."""
    return [compare_arrays(r, t) for r, t in zip(np.asarray(reference), np.asarray(target), strict=True)]


def worst_sample_rel_l2(reference: np.ndarray, outputs: np.ndarray) -> float:
    """The worst image's rel L2 of ``outputs`` against ``reference``; NaN where an output is not finite."""
    if not np.isfinite(outputs).all():
        return float("nan")
    return max(metrics.rel_l2_err for metrics in compare_per_sample(reference, outputs))


@dataclass(frozen=True)
class TopKAgreement:
    """Whether the target's top-k class set equals the reference's, and if not, whether it is a near-tie."""

    k: int
    match: bool
    near_tie: bool

    @property
    def real_mismatch(self) -> bool:
        return not self.match and not self.near_tie


def topk_agreement(reference: np.ndarray, target: np.ndarray, k: int, tolerance: float) -> TopKAgreement:
    """Compare top-k sets of one sample's logits.

    A mismatch is a near-tie when every class that entered or left the top-k sits within ``tolerance``
    (the sample's measured max_abs_diff) of the reference's top-k boundary: the reference itself does not
    separate those classes by more than the error, so the swap says nothing about correctness.
    """
    ref, tgt = np.asarray(reference, np.float64).ravel(), np.asarray(target, np.float64).ravel()
    k = min(k, ref.size)
    ref_order = np.argsort(-ref, kind="stable")
    ref_top, tgt_top = set(ref_order[:k].tolist()), set(np.argsort(-tgt, kind="stable")[:k].tolist())
    if ref_top == tgt_top:
        return TopKAgreement(k, True, False)
    kth = ref[ref_order[k - 1]]
    next_value = ref[ref_order[k]] if k < ref.size else kth
    entered = [kth - ref[c] for c in tgt_top - ref_top]  # how far below the boundary the newcomers were
    left = [ref[c] - next_value for c in ref_top - tgt_top]  # how far above the next class the leavers were
    near_tie = max(entered + left) < tolerance
    return TopKAgreement(k, False, bool(near_tie))


def topk_indices(logits: np.ndarray, k: int = 5) -> list[int]:
    logits = np.asarray(logits, np.float64).ravel()
    return np.argsort(-logits, kind="stable")[: min(k, logits.size)].tolist()
