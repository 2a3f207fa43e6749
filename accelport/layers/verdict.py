"""The exit decision of ``accelport layers``: the model's output judged exactly as ``accelport run`` judges it.

Module rows say *where*; whether the port fails is the run's verdict on the model's output (the ``(model)`` row):
``parity.compare_outputs`` with the same criteria, the same-precision baseline (half precision), the top-1 check and
the weights scan, plus the structural proof's fp32 judgement of the same row in the strict fp32 pass. So ``layers``
exits 1 exactly when ``run`` on the same target would fail: also when no single module crosses a limit (then it
names where the error grows fastest), and not when a module crosses a limit but the output passes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..criteria import Check, Criteria, criteria_for
from ..formatting import printable
from ..models import LoadedModel
from ..parity import ParityResult, compare_outputs
from ..preprocess import ImageBatch
from ..proofs import baseline_outputs, nonfinite_weights
from ..runners import Runner, infer_all
from .compare import LayerComparison
from .stats import describe_check

_logger = logging.getLogger(__name__)

STATUSES = ("diverged", "output-failed", "passed-with-divergent-module", "no-divergence")
FAILING = ("diverged", "output-failed")  # exit 1, as run's verdict


@dataclass
class OutputVerdict:
    """``run``'s verdict on the model output of the target's pass and, in half precision, of the strict fp32 pass."""

    parity: ParityResult | None  # None: the model's output was not captured (no batch-first tensor)
    structural: ParityResult | None = None  # None: no strict fp32 pass (fp32 target, or a module diverged first)
    fastest_growth: dict[str, Any] | None = None  # per mode, of the pass whose output fails

    def failed_checks(self) -> list[tuple[str, Check]]:
        """(pass, check) for every failing check: pass is the target's dtype pass or "structural" (strict fp32)."""
        found = [("target", c) for c in (self.parity.checks if self.parity else []) if not c.passed]
        return found + [("structural", c) for c in (self.structural.checks if self.structural else [])
                        if not c.passed]

    @property
    def failed(self) -> bool:
        return bool(self.failed_checks())

    def failed_check_lines(self) -> list[str]:
        """Each failing check in words, the strict fp32 pass's marked as such."""
        return [_describe(where, c) for where, c in self.failed_checks()]

    def to_json(self) -> dict[str, Any]:
        return {
            "rule": "the (model) row judged as `accelport run` judges its output (criteria.judge via "
                    "parity.compare_outputs: worst-image rel L2 and cosine, element share, NaN/Inf in outputs and "
                    "weights, real top-1 mismatches, same-precision baseline ratio), and in half precision the "
                    "strict fp32 pass's (model) row by the fp32 criteria (run's structural proof)",
            "judged": self.parity is not None, "passed": not self.failed,
            "failed_checks": self.failed_check_lines(),
            "fastest_growth": self.fastest_growth,
            "checks": [vars(c) for c in self.parity.checks] if self.parity else None,
            "structural_checks": [vars(c) for c in self.structural.checks] if self.structural else None,
            # as run's summary.json: the images whose target output is all zeros where the reference's is not
            **({"zero_target_images": self.parity.zero_target} if self.parity and self.parity.zero_target else {}),
        }


def _describe(where: str, check: Check) -> str:
    prefix = "strict fp32 pass: " if where == "structural" else ""
    detail = f" ({check.detail})" if check.detail else ""
    return f"{prefix}{describe_check(check)}{detail}"


def judge_output(comparison: LayerComparison, structural: LayerComparison | None, criteria: Criteria, *,
                 is_classifier: bool, names: list[str], baseline: np.ndarray | None,
                 weights: dict[str, torch.nn.Module]) -> OutputVerdict:
    """The run's checks on the captured model outputs (``baseline``: a correct implementation of the target's
    precision, proofs.baseline_outputs)."""
    if comparison.model_outputs is None:
        _logger.warning("layers: the model's output was not captured; only module rows are judged")
        return OutputVerdict(None)
    reference, target = comparison.model_outputs
    parity = compare_outputs(reference, target, criteria, is_classifier, baseline=baseline, sample_names=names,
                             nonfinite_weights=nonfinite_weights(weights), judge_zero_reference=True)
    proof = None
    if structural is not None and structural.model_outputs is not None:  # as proofs.structural_proof judges it
        # against the strict pass's own reference: the reference rounded like a half-precision copy, where one is
        proof = compare_outputs(structural.model_outputs[0], structural.model_outputs[1], criteria_for("fp32"),
                                is_classifier, sample_names=names)
    failing = comparison if not parity.passed else structural if proof is not None and not proof.passed else None
    growth = None if failing is None else {mode: failing.fastest_growth(mode) for mode in failing.modes}
    return OutputVerdict(parity, proof, growth)


def layers_verdict(loaded: LoadedModel, target: LoadedModel, images: ImageBatch, comparison: LayerComparison,
                   structural: LayerComparison | None, criteria: Criteria, *, batch_size: int,
                   is_classifier: bool) -> OutputVerdict:
    """``judge_output`` for ``run_layers``: the baseline, weights and names as ``accelport run`` builds them."""
    batches = [images.tensor[i : i + batch_size] for i in range(0, images.tensor.shape[0], batch_size)]

    def infer(runner: Runner) -> np.ndarray:
        return infer_all(runner, batches)

    weights = {"reference": loaded.model} | ({"target": target.model} if target is not loaded else {})
    return judge_output(comparison, structural, criteria, is_classifier=is_classifier,
                        names=[printable(str(p)) for p in images.paths],
                        baseline=baseline_outputs(loaded.model, criteria.precision, infer),  # effective precision
                        weights=weights)


def layers_status(comparison: LayerComparison, structural: LayerComparison | None, verdict: OutputVerdict) -> str:
    """One of ``STATUSES``; ``accelport layers`` exits 1 for ``FAILING`` ones, exactly when ``run`` would fail.

    A module may cross a limit while the model's output passes every check of ``run`` (a tiny fault whose error
    the following layers absorb): the module is still named, but the verdict, as ``run``'s, is a pass. Only when the
    model's output could not be captured do the module rows decide alone.
    """
    modules = comparison.diverged or (structural is not None and structural.diverged)
    if verdict.failed or (verdict.parity is None and modules):
        return "diverged" if modules else "output-failed"
    return "passed-with-divergent-module" if modules else "no-divergence"


def verdict_lines(data: dict[str, Any]) -> list[str]:
    """Console lines: which of run's output checks fail, and where the error grows fastest when no module diverges."""
    verdict = data.get("output_verdict")
    if data["status"] == "passed-with-divergent-module":
        return ["output    the model's output passes every check of run: the divergent module's error is absorbed "
                "by the layers after it, so the verdict is a pass (exit 0), as run's"]
    if not verdict or verdict["passed"]:
        return []
    lines = ["output    the model's output fails run's check(s): " + "; ".join(verdict["failed_checks"])]
    if data["status"] == "output-failed" and verdict["fastest_growth"] != data.get("fastest_growth"):
        growth = [f"{mode}: {g['module']} ({g['type']}, row {g['index']}, worst-image rel L2 "  # the mode lines
                  f"{g['worst_sample_rel_l2']:.3g})" for mode, g in (verdict["fastest_growth"] or {}).items() if g]
        lines.append("output    in the strict fp32 pass, the error grows fastest at "  # said it for the target's
                     + ("; ".join(growth) or "(no comparable module)"))
    return lines


__all__ = ["FAILING", "STATUSES", "OutputVerdict", "judge_output", "layers_status", "layers_verdict", "verdict_lines"]
