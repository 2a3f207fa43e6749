"""The few numbers kept per image, so that memory grows by bytes per image and never by its logits."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ..criteria import Criteria
from ..metrics import compare_per_sample, relative_errors, topk_agreement, topk_indices
from ..parity import tie_tolerance


@dataclass(frozen=True)
class ImageRecord:
    """One image's comparison: top-5 of both sides, agreement (with near-ties), error metrics, label."""

    key: str  # path relative to --data
    label: int | None
    reference_top5: list[int]
    target_top5: list[int]
    top1_match: bool
    top5_match: bool
    top1_near_tie: bool
    top5_near_tie: bool
    cosine: float
    rel_l2: float
    max_abs_diff: float
    mean_abs_diff: float
    within_rtol: int  # elements within the criteria's element-wise relative tolerance
    num_elements: int
    nonfinite_reference: int
    nonfinite_target: int
    zero_reference: bool = False  # the reference output is exactly zero: agreement with it proves nothing
    zero_target: bool = False  # the target's output is exactly zero where the reference's is not (run's caution)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ImageRecord:
        """A record as the journal holds it; a field of the wrong kind is a TypeError naming it (a resumed run used
        to take ``"cosine": "abc"`` and crash at the end, after evaluating every other image)."""
        for name, value in data.items():
            kinds = _FIELD_KINDS.get(name)
            wrong_list = isinstance(value, list) and not all(type(v) is int for v in value)
            if kinds is not None and (type(value) not in kinds or wrong_list):
                raise TypeError(f"field {name!r} holds {value!r}")
        return cls(**data)

    @property
    def real_top1_mismatch(self) -> bool:
        return not self.top1_match and not self.top1_near_tie


# the JSON kinds of each field (bool is not an int here, and an int is a valid float)
_FIELD_KINDS: dict[str, tuple[type, ...]] = {
    "key": (str,), "label": (int, type(None)), "reference_top5": (list,), "target_top5": (list,),
    **dict.fromkeys(("top1_match", "top5_match", "top1_near_tie", "top5_near_tie", "zero_reference",
                      "zero_target"), (bool,)),
    **dict.fromkeys(("cosine", "rel_l2", "max_abs_diff", "mean_abs_diff"), (float, int)),
    **dict.fromkeys(("within_rtol", "num_elements", "nonfinite_reference", "nonfinite_target"), (int,)),
}


def records_from_outputs(keys: list[str], labels: list[int | None], reference: np.ndarray, target: np.ndarray,
                         criteria: Criteria) -> list[ImageRecord]:
    """Per-image metrics and top-k agreement, the same functions and tolerances as ``accelport run`` uses."""
    reference = np.asarray(reference, np.float64)
    target = np.asarray(target, np.float64)
    errors = relative_errors(reference, target)
    within = np.where(np.isfinite(errors), errors <= criteria.elem_rtol, False).sum(axis=1)  # as share_within
    records = []
    for i, metrics in enumerate(compare_per_sample(reference, target)):
        ref, tgt = reference[i], target[i]
        tolerance = tie_tolerance(ref, criteria.max_rel_l2)  # what the criteria allow, never the target's own error
        finite = metrics.nonfinite_reference == 0 and metrics.nonfinite_target == 0
        top1 = topk_agreement(ref, tgt, 1, tolerance if finite else 0.0)
        top5 = topk_agreement(ref, tgt, 5, tolerance if finite else 0.0)
        records.append(ImageRecord(
            key=keys[i], label=labels[i], reference_top5=topk_indices(ref), target_top5=topk_indices(tgt),
            top1_match=top1.match, top5_match=top5.match, top1_near_tie=top1.near_tie, top5_near_tie=top5.near_tie,
            cosine=metrics.cosine_similarity, rel_l2=metrics.rel_l2_err, max_abs_diff=metrics.max_abs_diff,
            mean_abs_diff=metrics.mean_abs_diff, within_rtol=int(within[i]), num_elements=metrics.num_elements,
            nonfinite_reference=metrics.nonfinite_reference, nonfinite_target=metrics.nonfinite_target,
            zero_reference=not np.any(ref), zero_target=not np.any(tgt) and bool(np.any(ref)),
        ))
    return records
