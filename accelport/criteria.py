"""Pass/fail criteria per precision, and the verdict that applies them.

Defaults, and why (README "Parity criteria" has the full reasoning):
- ``fp32``: IEEE fp32 on both sides differs only by summation order (~1e-6 relative). Ascend's API checker
  rule, over 99.9 % of elements within 0.1 % relative error, plus cosine >= 0.99999 and relative L2 <= 1e-3.
- ``fp32-fast``: TF32/HF32 round conv/matmul inputs to a 10-bit mantissa (~5e-4 per op); after a few dozen
  layers the output moves by ~1e-3..1e-2 relative. Cosine >= 0.9999, relative L2 <= 2e-2, 99 % of elements
  within 5 %.
- ``fp16`` / ``bf16``: 10 / 7 mantissa bits in every activation, so whole-network outputs drift by ~1e-2
  relative and small logits by much more. Cosine >= 0.999 / 0.995 (Polygraphy's 0.997 lies between),
  relative L2 <= 5e-2 / 1e-1, 90 % / 80 % of elements within 5 % / 10 %. Ascend's per-API half rule (99 %
  within 1 %) is for one operator, not a 50-layer network, and would fail every correct bf16 port.
All precisions: no new NaN/Inf, and no top-1 disagreement that is not a near-tie (classifier head).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import numpy as np

from .errors import UsageError
from .metrics import TensorMetrics, share_within


@dataclass(frozen=True)
class Criteria:
    """Thresholds a target must meet against the CPU fp32 reference."""

    precision: str
    min_cosine: float  # worst sample's cosine similarity must be at least this
    max_rel_l2: float  # worst sample's relative L2 error must be at most this
    elem_rtol: float  # element-wise relative tolerance for ...
    min_within_share: float  # ... the share of all elements that must be within it
    max_top1_mismatches: int = 0  # top-1 disagreements allowed that are not near-ties

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


DEFAULT_CRITERIA: dict[str, Criteria] = {
    "fp32": Criteria("fp32", min_cosine=0.99999, max_rel_l2=1e-3, elem_rtol=1e-3, min_within_share=0.999),
    "fp32-fast": Criteria("fp32-fast", min_cosine=0.9999, max_rel_l2=2e-2, elem_rtol=5e-2, min_within_share=0.99),
    "fp16": Criteria("fp16", min_cosine=0.999, max_rel_l2=5e-2, elem_rtol=5e-2, min_within_share=0.90),
    "bf16": Criteria("bf16", min_cosine=0.995, max_rel_l2=1e-1, elem_rtol=1e-1, min_within_share=0.80),
}
_TUNABLE = {f.name: f.type for f in fields(Criteria) if f.name != "precision"}


def effective_precision(dtype: str, fp32_math: str, device_type: str) -> str:
    """Which criteria apply: reduced-mantissa fp32 only exists on accelerators (CPU kernels stay IEEE)."""
    if dtype == "fp32" and fp32_math == "fast" and device_type != "cpu":
        return "fp32-fast"
    return dtype


def criteria_for(precision: str, overrides: dict[str, str] | None = None) -> Criteria:
    """The defaults for ``precision`` with ``--criterion KEY=VALUE`` overrides applied."""
    criteria = DEFAULT_CRITERIA[precision]
    changes: dict[str, Any] = {}
    for key, text in (overrides or {}).items():
        if key not in _TUNABLE:
            raise UsageError(f"--criterion {key}={text}: unknown key; choose one of {', '.join(_TUNABLE)}")
        try:
            value = int(text) if key == "max_top1_mismatches" else float(text)
        except ValueError:
            raise UsageError(f"--criterion {key}={text}: {text!r} is not a number") from None
        if not math.isfinite(value) or value < 0 or (key in ("min_cosine", "min_within_share") and value > 1):
            raise UsageError(f"--criterion {key}={text}: out of range")
        changes[key] = value
    return replace(criteria, **changes)


def parse_criterion_flags(items: list[str] | None) -> dict[str, str]:
    parsed = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise UsageError(f"--criterion {item!r}: expected KEY=VALUE, e.g. min_cosine=0.9999")
        parsed[key.strip()] = value.strip()
    return parsed


@dataclass(frozen=True)
class Check:
    """One criterion: the measured value next to its threshold."""

    name: str
    value: float
    op: str  # ">=" or "<="
    threshold: float
    passed: bool


def _check(name: str, value: float, op: str, threshold: float) -> Check:
    passed = bool(value >= threshold) if op == ">=" else bool(value <= threshold)
    return Check(name, float(value), op, float(threshold), passed and bool(np.isfinite(value)))


def evaluate(
    criteria: Criteria,
    reference: np.ndarray,
    target: np.ndarray,
    per_sample: list[TensorMetrics],
    real_top1_mismatches: int | None,
) -> list[Check]:
    """Every check of the verdict; ``real_top1_mismatches`` is None for a features head (no classes)."""
    checks = [
        _check("min_sample_cosine", min(m.cosine_similarity for m in per_sample), ">=", criteria.min_cosine),
        _check("max_sample_rel_l2", max(m.rel_l2_err for m in per_sample), "<=", criteria.max_rel_l2),
        _check(f"share_within_rtol_{criteria.elem_rtol:g}", share_within(reference, target, criteria.elem_rtol),
               ">=", criteria.min_within_share),
        _check("new_nonfinite_values", sum(max(0, m.nonfinite_target - m.nonfinite_reference) for m in per_sample),
               "<=", 0),
    ]
    if real_top1_mismatches is not None:
        checks.append(_check("real_top1_mismatches", real_top1_mismatches, "<=", criteria.max_top1_mismatches))
    return checks
