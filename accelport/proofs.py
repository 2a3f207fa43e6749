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
- **The proof's reference for a half-precision copy** (``rounded_reference``): a ``--target-weights`` file storing
  bf16/fp16 tensors is proved against the reference with exactly those tensors rounded as the file holds them.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .criteria import criteria_for
from .devices import apply_numeric_settings
from .emulation import emulate_tf32
from .errors import RuntimeUnavailableError
from .formatting import listed
from .metrics import worst_sample_rel_l2
from .parity import ParityResult, compare_outputs
from .runners import Runner, create_runner

if TYPE_CHECKING:
    from .job.context import JobContext

_logger = logging.getLogger(__name__)

UNSEEN_CHECK_IMAGES = 4  # images the reference model runs with both checkpoints on (unseen_weight_differences)
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


def differing_tensors(reference: torch.nn.Module, target: torch.nn.Module) -> list[str]:
    """The floating-point tensors in which ``target``'s weights differ from ``reference``'s, in state-dict order:
    a --target-weights port should differ nowhere (beyond the rounding of a half-precision copy, which the caller
    applies to ``reference``), so each one is named, passed or not."""
    ours, theirs = reference.state_dict(), target.state_dict()
    return [name for name, tensor in theirs.items()
            if name in ours and tensor.is_floating_point() and not torch.equal(tensor, ours[name])]


def differing_dropped_head(reference: dict[str, torch.Tensor], target: dict[str, torch.Tensor],
                           stored_dtypes: tuple[str, ...] | None) -> list[str]:
    """The classifier tensors --features dropped (``LoadedModel.dropped_head``) in which the port differs from the
    reference beyond the rounding of the half-precision dtypes it stores: no output of the run can show them."""
    narrow = [name for name in stored_dtypes or () if name in UNIT_ROUNDOFF]

    def same(ours: torch.Tensor, theirs: torch.Tensor) -> bool:  # rounding as rounded_reference accepts it
        return torch.equal(ours, theirs) or any(_exact_rounding(ours, theirs, dtype) is not None for dtype in narrow)

    return [name for name, tensor in target.items()
            if name in reference and tensor.is_floating_point() and not same(reference[name], tensor)]


def unseen_weight_differences(reference: torch.nn.Module, target: torch.nn.Module, images: torch.Tensor,
                              differing: list[str]) -> list[str]:
    """``differing`` (``differing_tensors``), when the reference model computes bit-identical outputs on ``images``
    with either set of weights (CPU eager fp32); [] when they differ nowhere or show.

    Such a port passes any verdict, correctly for these outputs and blindly for its weights: timm's random init
    zero-initialises the last BatchNorm of every ResNet block, so a convolution 5 % off in that branch changed
    nothing and every runtime passed it."""
    if not differing:
        return []
    with torch.inference_mode():
        same = torch.equal(reference(images), target(images))
    return differing if same else []


@dataclass(frozen=True)
class WeightDifferences:
    """Where --target-weights differs from --weights, tensor by tensor (beyond a half-precision copy's rounding):
    a port should differ nowhere, so every one is named, and those no output of the run can show are said so."""

    tensors: list[str]  # every differing tensor, the dropped classifier's last
    unseen: list[str]  # ... of which the model's outputs are bit-identical with either set
    dropped: list[str]  # ... of which the classifier --features drops
    beyond_rounding: bool  # compared with the reference rounded as the copy stores it
    underflowed: list[dict[str, Any]] = field(default_factory=list)  # ... rounded to nearest, lossy under its normals

    @property
    def judged(self) -> list[str]:
        """The differing tensors the run's outputs do depend on."""
        return [name for name in self.tensors if name not in self.unseen and name not in self.dropped]

    @property
    def rounding_words(self) -> str:
        return _BEYOND_ROUNDING if self.beyond_rounding else ""

    def to_json(self) -> dict[str, Any]:
        """The keys summary.json's and bench.json's ``target_weights`` carry (``differing_text`` reads them)."""
        return {"differing_tensors": list(self.tensors), "compared_with_rounded_reference": self.beyond_rounding,
                "underflowed_tensors": list(self.underflowed)}

    def text(self) -> str:
        return differing_text(self.tensors, self.beyond_rounding, self.underflowed)

    def passed_caution(self, proof_skipped: str | None = None) -> str | None:
        """What a PASS means beside differing tensors the outputs depend on (None: there are none), for the console,
        the log, report.md and summary.json: a reader of the artifacts sees the PASS, not the console.
        ``proof_skipped``: why the structural proof did not run, where it would have (its absence is then the
        first suspect, not a scale near zero)."""
        lossy = {u["tensor"] for u in self.underflowed}
        judged, rounded = [n for n in self.judged if n not in lossy], [n for n in self.judged if n in lossy]
        if not judged and not rounded:
            return None
        if not judged:
            return (f"PASSED; --target-weights is --weights rounded to half precision, which keeps {len(rounded)} "
                    f"tensor(s) ({listed(rounded)}) with fewer bits or as zero (values under its smallest normal): "
                    "their effect on these images is within the criteria")
        also = (f" (and {len(rounded)} more that it stores as half-precision roundings with fewer bits)"
                if rounded else "")
        why = (f"The structural proof, which judges the same target in strict fp32 where the precision's own error "
               f"hides a fault, did not run ({proof_skipped}): run with it before trusting this PASS"
               if proof_skipped else
               "A fault this small in its effect often sits behind a scale near zero (layer scales of 1e-5 or 1e-6, as "
               "timm's random init sets them in ConvNeXt, FastViT or EfficientFormer blocks; the last BatchNorm of "
               "ResNet blocks), which real weights may not have: judge with them")
        return (f"PASSED, yet --target-weights differs from --weights in {len(judged)} tensor(s) ({listed(judged)})"
                f"{self.rounding_words}{also}: their effect on these images is within the criteria. A faithful port "
                f"differs nowhere. {why}")


_BEYOND_ROUNDING = " beyond the bf16/fp16 rounding it stores"


def underflowed_tensors(reference: dict[str, torch.Tensor], target: dict[str, torch.Tensor],
                        differing: Sequence[str]) -> list[dict[str, Any]]:
    """Those of ``differing`` that are exactly the reference's tensor rounded to nearest in bf16/fp16, yet moved by
    more than its unit roundoff: values under the format's smallest normal, held with fewer bits or as zero.

    An exact fp16 copy of a random-init ConvNeXt (layer scales of 1e-6, subnormal in fp16, moved by 1.3 %) read as
    "differs beyond the rounding it stores" and nothing more, like a wrong tensor. It is lossy, not misplaced, and a
    fp16 copy of a checkpoint with real values that small loses them the same way, so it stays named as differing."""
    found = []
    for name in differing:
        ours, theirs = reference.get(name), target.get(name)
        if ours is None or theirs is None or ours.shape != theirs.shape or not ours.is_floating_point():
            continue
        for dtype in HALF_STORAGE:
            if (rounded := _rounding(ours, theirs, dtype)) is not None:
                if rounded[1] > UNIT_ROUNDOFF[dtype]:  # else a plain rounding of normal values: no underflow
                    found.append({"tensor": name, "dtype": dtype, "rel_change": rounded[1]})
                break
    return found


def differing_text(differing: Sequence[str], compared_with_rounded_reference: bool,
                   underflowed: Sequence[dict[str, Any]] = ()) -> str:
    """Which tensors --target-weights changes, for report.md and bench.md: a port should change none, and a fault
    the outputs hide (random-init scales near zero) is still named here."""
    rounding = _BEYOND_ROUNDING if compared_with_rounded_reference else ""
    if not differing:
        return f"identical to --weights in every floating-point tensor{rounding}"
    lossy = {u["tensor"] for u in underflowed}
    others = [name for name in differing if name not in lossy]  # the ones to look at first: no rounding explains them
    text = f"differs from --weights{rounding} in {len(differing)} tensor(s): {listed(others or list(differing))}"
    for dtype in dict.fromkeys(u["dtype"] for u in underflowed):
        these = [u for u in underflowed if u["dtype"] == dtype]
        changes = sorted(100 * u["rel_change"] for u in these)
        share = "all of them" if not others else f"{len(these)} more ({listed([u['tensor'] for u in these])})"
        gone = ("precision rather than a misplaced value" if changes[-1] < 50 else
                "most or all of their values flushed to zero, which changes what the model computes")
        text += (f" ({share}: exactly --weights rounded to {dtype} to nearest, with values under its smallest normal "
                 f"({torch.finfo(getattr(torch, dtype)).tiny:.1e}), which it keeps with fewer bits or as zero: "
                 f"{_percent_range(changes)} of each tensor lost, {gone})")
    return text


def _percent_range(changes: list[float]) -> str:
    def percent(value: float) -> str:
        return f"{value:.2g} %" if value < 10 else f"{value:.0f} %"

    low, high = percent(changes[0]), percent(changes[-1])
    return low if low == high else f"{low} to {high}"


def weight_differences(job: JobContext, images: torch.Tensor) -> WeightDifferences | None:
    """--target-weights against --weights (None without it), the tensors no output can show on ``images`` (a few
    of the job's) said before the verdict, as the verdict cannot judge them (run and bench)."""
    if not job.separate_target:
        return None
    # against the reference rounded like a half-precision copy: its rounding alone is a difference that shows
    compared = job.rounded_reference() or job.loaded
    differing = differing_tensors(compared.model, job.target_model.model)
    unseen = unseen_weight_differences(compared.model, job.target_model.model, images, differing)
    dropped = differing_dropped_head(job.loaded.dropped_head, job.target_model.dropped_head,
                                     job.target_model.weights.stored_dtypes)
    underflowed = underflowed_tensors(job.loaded.model.state_dict(), job.target_model.model.state_dict(), differing)
    differences = WeightDifferences([*differing, *dropped], unseen, dropped, compared is not job.loaded, underflowed)
    if dropped:
        _logger.warning("--target-weights differs from --weights in %d classifier tensor(s) (%s) that --features "
                        "drops: no output of this run computes them, so it cannot judge them; run without "
                        "--features to judge the classifier too", len(dropped), listed(dropped))
    if unseen:
        _logger.warning("--target-weights differs from --weights in %d tensor(s) (%s)%s, yet the model computes "
                        "bit-identical outputs with either on these images: those tensors do not reach the outputs "
                        "here (with random-init weights, timm zero-initialises some branches, e.g. the last "
                        "BatchNorm of each ResNet block), so this run cannot judge them; use the real --weights",
                        len(unseen), listed(unseen), differences.rounding_words)
    return differences


def check_not_fp32(precision: str, target: np.ndarray, fp32_outputs: np.ndarray,
                   reference: np.ndarray | None = None) -> None:
    """Half-precision or int8 outputs equal to fp32 ones, bit for bit, were not computed in that precision; unless
    both are all zero (a random-init classifier timm zero-initialises), which every precision computes alike and the
    ``zero_reference_outputs`` check judges: sequencer2d_s and mixer_s16_224 were "fell back to fp32" in bf16.
    With ``reference``, also unless the fp32 outputs fail it (beyond fp32's max_rel_l2): a broken port whose output
    no longer depends on the quantised layers (a classifier never loaded: the bias alone) is the same in every
    precision, and its failure is the verdict, not the engine's."""
    if reference is not None and worst_sample_rel_l2(reference, fp32_outputs) > criteria_for("fp32").max_rel_l2:
        return
    if precision in REDUCED_DTYPES and np.array_equal(target, fp32_outputs) and np.any(fp32_outputs):
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


# The storage grids a converted copy of fp32 weights is expected in. A coarser one (fp8: 3 mantissa bits) is not a
# copy's rounding but a lossy format of its own, whose error int8's tolerance could hide: its tensors stay unrounded
# in the proof's reference, so the proof sees them as it sees any other difference.
HALF_STORAGE = ("bfloat16", "float16")
WIDE_STORAGE = frozenset({"float32", "float64"})  # what the fp32 reference computes in without rounding
# Round to nearest moves a value by at most this share of it (2^-(mantissa bits + 1)). A tensor whose rounding moved it
# by more (overflow to inf, most of it flushed under the format's smallest normal) lost more than a copy's rounding
# and stays unrounded in the proof's reference: an fp16 copy whose BatchNorm variances overflowed passed its proof.
UNIT_ROUNDOFF = {"bfloat16": 2.0 ** -8, "float16": 2.0 ** -11}


def rounding_text(tensors_rounded: dict[str, int]) -> str:
    """``{"bfloat16": 41}`` -> "41 tensor(s) to bfloat16", as every report says it."""
    return ", ".join(f"{count} tensor(s) to {dtype}" for dtype, count in sorted(tensors_rounded.items()))


@dataclass
class RoundedReference:
    """The reference model with the tensors a half-precision ``--target-weights`` copy holds as their exact
    bf16/fp16 rounding rounded the same way: what the strict-fp32 proof compares the target with.

    A correct bf16 copy of the fp32 checkpoint failed the proof of every bf16/fp16/int8 target by that rounding alone
    (convnextv2_atto: rel L2 3.6e-3 against the fp32 limit of 1e-3) although its bf16 run equalled accelport's own
    bf16 baseline. Only the proof uses it: the run's own verdict (and an fp32 run's) still compares with the
    checkpoint as loaded, so a copy whose rounding costs accuracy fails there (a first version made the reference
    itself compute with the copy's values, and a lossy fp16 copy passed an fp32 run with rel L2 0)."""

    model: torch.nn.Module
    rounded: dict[str, int] = field(default_factory=dict)  # storage dtype -> tensors rounded to it

    def describe(self) -> str:
        return rounding_text(self.rounded)

    def to_json(self) -> dict[str, Any]:
        return {"tensors_rounded": dict(sorted(self.rounded.items()))}


def _copy_grids(theirs: dict[str, torch.Tensor], stored_dtypes: tuple[str, ...] | None) -> list[str]:
    """The bf16/fp16 grids a target checkpoint was rounded to: those it stores, and one its float tensors all lie on
    although stored wider (a bf16 model upcast to fp32 on saving)."""
    grids = [dtype for dtype in HALF_STORAGE if dtype in (stored_dtypes or ())]
    if not set(stored_dtypes or ()) <= WIDE_STORAGE:  # fp8 values lie on both grids: no upcast copy
        return grids
    floating = [tensor for tensor in theirs.values() if tensor.is_floating_point()]
    for dtype in HALF_STORAGE:
        grid = getattr(torch, dtype)
        if dtype not in grids and floating and all(torch.equal(t, t.to(grid).to(t.dtype)) for t in floating):
            _logger.warning("--target-weights: every float tensor is a %s value though stored as %s: the "
                            "structural proof compares it with the reference rounded to %s", dtype,
                            ", ".join(stored_dtypes or ()), dtype)
            grids.append(dtype)
    return grids


def _rounding(tensor: torch.Tensor, other: torch.Tensor, dtype: str) -> tuple[torch.Tensor, float] | None:
    """``tensor`` rounded to nearest in ``dtype`` and how far that moved it (relative L2), when ``other`` is exactly
    that rounding and finite; else None."""
    candidate = tensor.to(getattr(torch, dtype)).to(tensor.dtype)
    if not torch.equal(other, candidate) or not bool(torch.isfinite(candidate).all()):
        return None
    return candidate, float((candidate.double() - tensor.double()).norm() / tensor.double().norm().clamp_min(1e-300))


def _exact_rounding(tensor: torch.Tensor, other: torch.Tensor, dtype: str) -> torch.Tensor | None:
    """``tensor`` rounded to ``dtype`` when ``other`` is exactly that and the rounding cost no more than round to
    nearest does (``UNIT_ROUNDOFF``); else None."""
    rounded = _rounding(tensor, other, dtype)
    return rounded[0] if rounded is not None and rounded[1] <= UNIT_ROUNDOFF[dtype] else None


def rounded_reference(reference: torch.nn.Module, target: torch.nn.Module,
                      stored_dtypes: tuple[str, ...] | None) -> RoundedReference | None:
    """The proof's reference for a target checkpoint stored in ``stored_dtypes``; None when it is no bf16/fp16 copy
    (``_copy_grids``) or none of its tensors is exactly the reference's rounded to one of those.

    Tensor by tensor: a copy's tensor equal to the reference's rounded to the copy's grid, by no more than round to
    nearest moves a value, takes that rounding; every other tensor stays as loaded, so a fault anywhere (a perturbed
    tensor, one rounded wrongly or more coarsely, a swapped one, an overflow to inf) is compared with the unrounded
    reference and fails the proof as before."""
    theirs = target.state_dict()
    grids = _copy_grids(theirs, stored_dtypes)
    if not grids:
        return None
    state, rounded = {}, dict[str, int]()
    for name, tensor in reference.state_dict().items():
        state[name] = tensor
        other = theirs.get(name)
        if other is None or not tensor.is_floating_point() or other.shape != tensor.shape or torch.equal(other, tensor):
            continue
        for dtype in grids:
            candidate = _exact_rounding(tensor, other, dtype)
            if candidate is not None:
                state[name] = candidate
                rounded[dtype] = rounded.get(dtype, 0) + 1
                break
    if not rounded:
        return None
    model = copy.deepcopy(reference)
    model.load_state_dict(state)
    _logger.info("structural proof: the reference rounded as --target-weights stores it (%s)", rounding_text(rounded))
    return RoundedReference(model.eval(), rounded)


@dataclass
class StructuralProof:
    """The target in strict fp32, judged by the fp32 criteria; or why it was not run."""

    status: str  # "passed", "failed", "skipped", or "not-needed" (the run itself is strict fp32)
    reason: str
    parity: ParityResult | None = None
    rounded: RoundedReference | None = None  # the reference it compared with, rounded like a half-precision copy

    @property
    def failed(self) -> bool:
        return self.status == "failed"

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"status": self.status, "reason": self.reason}
        if self.parity is not None:
            data.update(criteria="fp32", dtype="fp32", fp32_math="strict", parity=self.parity.to_json())
        if self.rounded is not None:
            data["reference_rounded_like_target_weights"] = self.rounded.to_json()
        return data


def proof_reference_outputs(rounded: RoundedReference | None, reference: np.ndarray,
                            infer: Callable[[Runner], np.ndarray]) -> np.ndarray:
    """What the structural proof judges against: ``reference`` (the fp32 reference's outputs), or the rounded
    reference model's outputs, computed as the reference's are (CPU eager, fp32)."""
    if rounded is None:
        return reference
    with create_runner("eager", rounded.model, torch.device("cpu"), "fp32") as runner:
        return infer(runner)


def proof_reason(rounded: RoundedReference | None) -> str:
    """What the structural proof compared, in the words summary.json, report.md and the log use."""
    reason = "the same target in strict IEEE fp32, judged by the fp32 criteria"
    if rounded is not None:
        reason += (f", against the reference with its weights rounded as --target-weights stores them "
                   f"({rounded.describe()}; every other tensor as loaded)")
    return reason


# Failing checks that no precision's own error explains: a run failing one of them is not read as that error, even
# where the strict-fp32 proof passed (a NaN/Inf in a tensor the outputs never reach passes the proof).
PORT_CHECKS = frozenset({"nonfinite_weights", "nonfinite_reference_values", "zero_reference_outputs"})


def reads_as_own_error(proof_status: str | None, failed_checks: list[str]) -> bool:
    """Whether a failed run (or eval) is the precision's own error: its proof passed and no port check failed."""
    return proof_status == "passed" and bool(failed_checks) and not PORT_CHECKS & set(failed_checks)


def own_error_reading(precision: str, calibration_images: int | None, random_init: bool,
                      scales_at_floor: dict[str, Any] | None = None, stored_rounding: list[str] | None = None) -> str:
    """Why a run (or an eval) can fail while its structural proof passes: the precision's own error, not the
    port's; ``scales_at_floor``: the PT2E quantizer's finding (quantize.scales_at_floor), which names the cause;
    ``stored_rounding``: the dtypes a --target-weights copy stores, which the proof's reference was rounded to."""
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
    if stored_rounding:
        grids = ", ".join(stored_rounding)
        return (f"reading: the same target in strict fp32 passes against the reference rounded as --target-weights "
                f"stores it ({grids}), so the weights and layout arrived intact up to that rounding; the failing "
                f"checks measure {precision}'s own error ({causes}) plus the file's {grids} rounding, which a "
                f"{precision} run of the original checkpoint does not carry")
    return (f"reading: the same target in strict fp32 passes, so the weights and layout arrived intact; the failing "
            f"checks measure {precision}'s own error ({causes})")


def structural_proof(precision: str, enabled: bool, make_runner: Callable[[], Runner], device: torch.device,
                     fp32_math: str, infer: Callable[[Runner], np.ndarray], reference: np.ndarray,
                     target: np.ndarray, is_classifier: bool, names: list[str],
                     rounded: RoundedReference | None = None) -> StructuralProof:
    """Run the target in strict fp32 when its own precision is not (``make_runner`` builds it in fp32), and judge
    it against ``reference``: the fp32 reference's outputs, or with ``rounded`` (a half-precision copy's proof) the
    outputs of that rounded reference model.

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
    check_not_fp32(precision, target, fp32_target, reference)
    parity = compare_outputs(reference, fp32_target, criteria_for("fp32"), is_classifier, sample_names=names)
    status = "passed" if parity.passed else "failed"
    _logger.info("structural proof (target in strict fp32): %s", status)
    return StructuralProof(status, proof_reason(rounded), parity, rounded)
