"""What a half-precision (or fp32-fast) verdict needs beyond the target's own outputs.

- The **structural proof**: the same target (runtime, device, layout, weights) run again in strict IEEE fp32 and
  judged by the fp32 criteria. Weight, layout and conversion bugs do not depend on precision, and fp32 sees them
  down to 1e-4 relative; half precision's own noise hides them.
- The **same-precision baseline**: the reference model (correct by definition) run by CPU eager in the target's
  dtype, or for fp32-fast in fp32 with TF32 emulation (``emulation.emulate_tf32``). Its error against the fp32
  reference is what a correct implementation of that precision gets wrong; the target is judged relative to it
  (``criteria.judge``) and the near-tie allowance comes from it.
- The **weights scan**: NaN/Inf in any loaded tensor, named.
- **Unseen differences**: a port whose weights differ from the reference's in tensors that do not change the
  reference model's outputs on these images (a random init's zero-initialised branches) cannot be judged there.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .criteria import criteria_for
from .devices import apply_numeric_settings
from .emulation import emulate_tf32
from .errors import RuntimeUnavailableError
from .parity import ParityResult, compare_outputs
from .runners import Runner, create_runner

_logger = logging.getLogger(__name__)

HALF_DTYPES = ("bf16", "fp16")
REDUCED_DTYPES = (*HALF_DTYPES, "int8")  # precisions whose outputs can never equal fp32 ones bit for bit


def nonfinite_weights(models: dict[str, torch.nn.Module], *, report: bool = True) -> dict[str, int]:
    """``"<side> weights: <tensor>" -> count`` of NaN/Inf in every floating tensor of each model's state dict, each
    logged as an error unless ``report`` is False (power's own NaN fault: injected, and judged in its table)."""
    found: dict[str, int] = {}
    for side, model in models.items():
        for name, tensor in model.state_dict().items():
            if tensor.is_floating_point():
                count = int((~torch.isfinite(tensor)).sum())
                if count:
                    found[f"{side} weights: {name}"] = count
    for key, count in found.items() if report else ():
        _logger.error("%s holds %d NaN/Inf value(s)", key, count)
    return found


def unseen_weight_differences(reference: torch.nn.Module, target: torch.nn.Module, images: torch.Tensor) -> list[str]:
    """The tensors in which ``target``'s weights differ from ``reference``'s, when the reference model computes
    bit-identical outputs on ``images`` with either set (CPU eager fp32); [] when they differ nowhere or show.

    Such a port passes any verdict, correctly for these outputs and blindly for its weights: timm's random init
    zero-initialises the last BatchNorm of every ResNet block, so a convolution 5 % off in that branch changed
    nothing and every runtime passed it."""
    ours, theirs = reference.state_dict(), target.state_dict()
    differing = [name for name, tensor in theirs.items()
                 if name in ours and tensor.is_floating_point() and not torch.equal(tensor, ours[name])]
    if not differing:
        return []
    with torch.inference_mode():
        same = torch.equal(reference(images), target(images))
    return differing if same else []


def check_not_fp32(precision: str, target: np.ndarray, fp32_outputs: np.ndarray) -> None:
    """Half-precision or int8 outputs equal to fp32 ones, bit for bit, were not computed in that precision."""
    if precision in REDUCED_DTYPES and np.array_equal(target, fp32_outputs):
        raise RuntimeUnavailableError(
            f"--dtype {precision}: the target's outputs are bit-identical to fp32 outputs: the engine fell back to "
            f"fp32 silently (e.g. no {precision} support on this device, or a stale fp32 engine from a cache); "
            "refusing to report it as " + precision)


def baseline_outputs(model: torch.nn.Module, precision: str,
                     infer: Callable[[Runner], np.ndarray]) -> np.ndarray | None:
    """A correct implementation of the *effective* precision (``criteria.effective_precision``), or None.

    Half precision: the CPU eager model in that dtype. fp32-fast (TF32/HF32 on an accelerator): the CPU eager fp32
    model with TF32-rounded conv/linear operands. Strict fp32 and int8 have none (fp32 is judged strictly; int8 by
    its criteria and the structural proof); fast math on a CPU target is strict fp32, hence none too.
    """
    if precision in HALF_DTYPES:
        baseline_model, dtype = model, precision
    elif precision == "fp32-fast":
        baseline_model, dtype = emulate_tf32(model), "fp32"
    else:
        return None
    with create_runner("eager", baseline_model, torch.device("cpu"), dtype) as runner:
        return infer(runner)


@dataclass
class StructuralProof:
    """The target in strict fp32, judged by the fp32 criteria; or why it was not run."""

    status: str  # "passed", "failed", "skipped", or "not-needed" (the run itself is strict fp32)
    reason: str
    parity: ParityResult | None = None

    @property
    def failed(self) -> bool:
        return self.status == "failed"

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"status": self.status, "reason": self.reason}
        if self.parity is not None:
            data.update(criteria="fp32", dtype="fp32", fp32_math="strict", parity=self.parity.to_json())
        return data


def own_error_reading(precision: str, calibration_images: int | None, random_init: bool,
                      scales_at_floor: dict[str, Any] | None = None) -> str:
    """Why a run (or an eval) can fail while its structural proof passes: the precision's own error, not the
    port's; ``scales_at_floor``: the PT2E quantizer's finding (quantize.scales_at_floor), which names the cause."""
    causes = "the quantiser and its calibration" if precision == "int8" else f"{precision} rounding"
    if precision == "int8" and calibration_images:
        causes += f" ({calibration_images} calibration image(s))"
    if precision == "int8" and scales_at_floor:
        causes += (f"; {scales_at_floor['clamped']} of {scales_at_floor['quantisers']} activation quantisers "
                   f"calibrated a range under the quantizer's smallest scale ({scales_at_floor['floor']:.3g}), so "
                   "their small values round to zero")
    if random_init:
        causes += ("; with RANDOM-INIT weights, whose activation ranges are unlike a trained model's, this error "
                   "says little about the real checkpoint: rerun with --weights")
    return (f"reading: the same target in strict fp32 passes, so the weights and layout arrived intact; the failing "
            f"checks measure {precision}'s own error ({causes})")


def structural_proof(precision: str, enabled: bool, make_runner: Callable[[], Runner], device: torch.device,
                     fp32_math: str, infer: Callable[[Runner], np.ndarray], reference: np.ndarray,
                     target: np.ndarray, is_classifier: bool, names: list[str]) -> StructuralProof:
    """Run the target in strict fp32 when its own precision is not (``make_runner`` builds it in fp32).

    Also the check that half precision is what it says: outputs bit-identical to the same target's fp32 outputs
    mean the engine fell back to fp32 silently, a RuntimeUnavailableError (exit 2), never a half-precision pass.
    """
    if precision == "fp32":
        return StructuralProof("not-needed", "the run itself is strict IEEE fp32, judged by the fp32 criteria")
    if not enabled:
        hides = "quantisation" if precision == "int8" else f"{precision}'s rounding"
        return StructuralProof("skipped", f"disabled by --no-structural-proof: weight and layout bugs that {hides} "
                                          "hides are NOT ruled out")
    apply_numeric_settings(device, "strict")
    try:
        with make_runner() as runner:
            fp32_target = infer(runner)
    except RuntimeUnavailableError as exc:  # a device or runtime without fp32: say so, do not pretend
        _logger.warning("structural proof skipped: %s", exc)
        return StructuralProof("skipped", f"this device/runtime cannot run strict fp32: {exc}")
    finally:
        apply_numeric_settings(device, fp32_math)
    check_not_fp32(precision, target, fp32_target)
    parity = compare_outputs(reference, fp32_target, criteria_for("fp32"), is_classifier, sample_names=names)
    status = "passed" if parity.passed else "failed"
    _logger.info("structural proof (target in strict fp32): %s", status)
    return StructuralProof(status, "the same target in strict IEEE fp32, judged by the fp32 criteria", parity)
