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
- ``int8``: post-training static quantisation (docs/int8.md): 8-bit activations per tensor and weights per channel,
  so outputs drift by several percent. Cosine >= 0.99, relative L2 <= 0.15, 70 % of elements within 20 %: about 4x
  the worst error of a correct int8 port of the seeded checkpoint on ONNX Runtime, OpenVINO and compile (rel L2
  0.023..0.040, cosine >= 0.9992), and above every random-init CNN measured (rel L2 <= 0.12). Weight and layout bugs
  are caught by the structural proof (the engine in strict fp32), not by these limits.
All precisions: no NaN/Inf on either side (nor in the weights), and no top-1 disagreement that is not a near-tie
(classifier head); a near-tie is judged against what a correct implementation of the precision gets wrong, never
against the target's own error. Half precision and fp32-fast are also judged against a baseline of the same
precision (the CPU eager model in that dtype; for fp32-fast the fp32 model with TF32-rounded conv/linear operands,
``emulation.emulate_tf32``): per image, the target's error may be at most ``max_baseline_ratio`` times the
baseline's (rel L2 and share of elements outside ``BASELINE_RTOL``), floors as in ``ratio``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import numpy as np

from .errors import UsageError


@dataclass(frozen=True)
class Criteria:
    """Thresholds a target must meet against the CPU fp32 reference."""

    precision: str
    min_cosine: float  # worst sample's cosine similarity must be at least this
    max_rel_l2: float  # worst sample's relative L2 error must be at most this
    elem_rtol: float  # element-wise relative tolerance for ...
    min_within_share: float  # ... the share of all elements that must be within it
    max_top1_mismatches: int = 0  # top-1 disagreements allowed that are not near-ties
    max_baseline_ratio: float = 2.0  # half precision, fp32-fast: mean target error / mean baseline error

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def overridden(self) -> dict[str, float]:
        """The thresholds that differ from the precision's defaults (``--criterion``), by name."""
        default = DEFAULT_CRITERIA.get(self.precision)
        return {} if default is None else {name: getattr(self, name) for name in _TUNABLE
                                           if getattr(self, name) != getattr(default, name)}

    def label(self) -> str:
        """``fp32``, or ``fp32, overridden: min_cosine=0.999``: a verdict under loosened limits says so."""
        changed = self.overridden()
        return self.precision + ("" if not changed else ", overridden: " + ", ".join(
            f"{name}={value!r}" for name, value in changed.items()))


DEFAULT_CRITERIA: dict[str, Criteria] = {
    "fp32": Criteria("fp32", min_cosine=0.99999, max_rel_l2=1e-3, elem_rtol=1e-3, min_within_share=0.999),
    "fp32-fast": Criteria("fp32-fast", min_cosine=0.9999, max_rel_l2=2e-2, elem_rtol=5e-2, min_within_share=0.99,
                          max_baseline_ratio=2.0),  # against the TF32-emulated baseline: docs/verdict.md section 7
    "fp16": Criteria("fp16", min_cosine=0.999, max_rel_l2=5e-2, elem_rtol=5e-2, min_within_share=0.90),
    "bf16": Criteria("bf16", min_cosine=0.995, max_rel_l2=1e-1, elem_rtol=1e-1, min_within_share=0.80),
    "int8": Criteria("int8", min_cosine=0.99, max_rel_l2=0.15, elem_rtol=0.2, min_within_share=0.7),
}
_TUNABLE = {f.name: f.type for f in fields(Criteria) if f.name != "precision"}
TUNABLE_CRITERIA = tuple(_TUNABLE)  # what --criterion KEY=VALUE takes


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
            value: float = float(text)
        except ValueError:
            raise UsageError(f"--criterion {key}={text}: {text!r} is not a number") from None
        if key == "max_top1_mismatches":  # a count: 1.0 is one, 1.5 is not
            if not math.isfinite(value) or not value.is_integer():  # inf.is_integer() is False: said as infinite
                raise UsageError(f"--criterion {key}={text}: {text!r} is not a finite whole number")
            value = int(value)
        if not math.isfinite(value) or value < 0 or (key in ("min_cosine", "min_within_share") and value > 1):
            allowed = "between 0 and 1" if key in ("min_cosine", "min_within_share") else "a finite number >= 0"
            raise UsageError(f"--criterion {key}={text}: out of range ({key} is {allowed})")
        changes[key] = value
    return replace(criteria, **changes)


def parse_criterion_flags(items: list[str] | None) -> dict[str, str]:
    parsed: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise UsageError(f"--criterion {item!r}: expected KEY=VALUE, e.g. min_cosine=0.9999")
        if key.strip() in parsed and parsed[key.strip()] != value.strip():  # the last one won, silently
            raise UsageError(f"--criterion {key.strip()}: given twice ({parsed[key.strip()]} and {value.strip()}); "
                             "keep one")
        parsed[key.strip()] = value.strip()
    return parsed


BASELINE_RTOL = 1e-2  # the baseline rule compares shares of elements whose guarded relative error exceeds this
RATIO_FLOORS = {"rel_l2": 1e-3, "outside": 1e-3}  # fp32's own bounds: a baseline better than them is not a yardstick


def ratio(target_error: float, baseline_error: float, kind: str) -> float:
    """``target / max(baseline, floor)``: how many times a correct implementation's error the target makes."""
    return float(target_error / max(baseline_error, RATIO_FLOORS[kind]))


@dataclass(frozen=True)
class Check:
    """One criterion: the measured value next to its threshold, and where it failed when that can be said."""

    name: str
    value: float
    op: str  # ">=" or "<="
    threshold: float
    passed: bool
    detail: str | None = None  # e.g. which tensor or image holds the NaN


def check(name: str, value: float, op: str, threshold: float, detail: str | None = None) -> Check:
    """A check that a NaN value never passes."""
    passed = bool(value >= threshold) if op == ">=" else bool(value <= threshold)
    return Check(name, float(value), op, float(threshold), passed and bool(np.isfinite(value)), detail)


@dataclass(frozen=True)
class Evidence:
    """What the verdict judges, however it was gathered: whole outputs (run, bench), per-image records (eval) or
    running sums per module (layers). Every judge of accelport builds one of these and calls ``judge``."""

    worst_cosine: float
    worst_rel_l2: float
    within_share: float  # share of all elements within the criteria's elem_rtol
    nonfinite_reference: int
    nonfinite_target: int
    real_top1_mismatches: int | None = None  # None: no classes (features head, a module's output)
    # the target's error over the same-precision baseline's, mean over the images (parity.baseline_ratios);
    # None: no same-precision baseline (fp32)
    baseline_l2_ratio: float | None = None
    baseline_outside_ratio: float | None = None
    nonfinite_weights: int | None = None  # None: weights not inspected (e.g. layers per module)
    # images whose reference output is exactly zero, where a match proves nothing (a zero-initialised head on a
    # random init); None: not judged (a module's output, which may rightly be zero)
    zero_reference_samples: int | None = None
    where: dict[str, str | None] | None = None  # check name -> where it failed (tensor, image)


def judge(criteria: Criteria, evidence: Evidence) -> list[Check]:
    """Every check of the verdict, in a fixed order; the same function serves run, bench, eval and layers."""
    where = evidence.where or {}
    checks = [
        check("min_sample_cosine", evidence.worst_cosine, ">=", criteria.min_cosine, where.get("min_sample_cosine")),
        check("max_sample_rel_l2", evidence.worst_rel_l2, "<=", criteria.max_rel_l2, where.get("max_sample_rel_l2")),
        check(f"share_within_rtol_{criteria.elem_rtol:g}", evidence.within_share, ">=", criteria.min_within_share),
        check("nonfinite_reference_values", evidence.nonfinite_reference, "<=", 0, where.get("nonfinite_reference")),
        check("nonfinite_target_values", evidence.nonfinite_target, "<=", 0, where.get("nonfinite_target")),
    ]
    if evidence.nonfinite_weights is not None:
        checks.append(check("nonfinite_weights", evidence.nonfinite_weights, "<=", 0, where.get("nonfinite_weights")))
    if evidence.zero_reference_samples is not None:
        checks.append(check("zero_reference_outputs", evidence.zero_reference_samples, "<=", 0,
                            where.get("zero_reference_outputs")))
    if evidence.baseline_l2_ratio is not None:
        checks.append(check("max_baseline_rel_l2_ratio", evidence.baseline_l2_ratio, "<=",
                            criteria.max_baseline_ratio, where.get("max_baseline_rel_l2_ratio")))
    if evidence.baseline_outside_ratio is not None:
        checks.append(check(f"max_baseline_outside_{BASELINE_RTOL:g}_ratio", evidence.baseline_outside_ratio,
                            "<=", criteria.max_baseline_ratio, where.get("max_baseline_outside_ratio")))
    if evidence.real_top1_mismatches is not None:
        checks.append(check("real_top1_mismatches", evidence.real_top1_mismatches, "<=", criteria.max_top1_mismatches,
                            where.get("real_top1_mismatches")))
    return checks


def worst_index(values: Sequence[float], worst_is_low: bool) -> int:
    """Index of the worst value, NaN counting as worst of all."""
    array = np.asarray(values, np.float64)
    if np.isnan(array).any():
        return int(np.argmax(np.isnan(array)))
    return int(np.argmin(array) if worst_is_low else np.argmax(array))
