"""Dataset-level figures from per-image records: pure functions, independent of how the records were made.

The records arrive sorted by dataset position, so the figures do not depend on the number of processes,
the order in which batches finished, or which of them came from a resume journal.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..criteria import Check, Criteria, Evidence, check, judge, worst_index
from ..parity import zero_reference_where
from .records import ImageRecord

PERCENTILES = (0.1, 1, 5, 25, 50, 75, 95, 99, 99.9)


def distribution(values: Sequence[float]) -> dict[str, float]:
    """min, mean, max and percentiles (``p0.1`` ... ``p99.9``) of a per-image quantity."""
    array = np.asarray(values, np.float64)
    if array.size == 0:
        return {}
    out = {"min": float(array.min()), "mean": float(array.mean()), "max": float(array.max())}
    out.update({f"p{p:g}": float(np.percentile(array, p)) for p in PERCENTILES})
    return out


def accuracy(records: Sequence[ImageRecord]) -> dict[str, Any] | None:
    """Top-1/top-5 accuracy of both sides over the labelled images, with the counts behind the shares."""
    labelled = [r for r in records if r.label is not None]
    if not labelled:
        return None
    n = len(labelled)
    counts = {
        side: {
            "top1_correct": sum(getattr(r, f"{side}_top5")[0] == r.label for r in labelled),
            "top5_correct": sum(r.label in getattr(r, f"{side}_top5") for r in labelled),
        }
        for side in ("reference", "target")
    }
    shares = {side: {"top1": c["top1_correct"] / n, "top5": c["top5_correct"] / n, **c} for side, c in counts.items()}
    return {
        "num_images": n,
        **shares,
        "difference": {k: shares["target"][k] - shares["reference"][k] for k in ("top1", "top5")},
    }


def agreement(records: Sequence[ImageRecord]) -> dict[str, Any]:
    """How often the target's top-1 / top-5 equals the reference's; near-ties counted apart (metrics.py)."""
    n = len(records)
    return {
        "top1": sum(r.top1_match for r in records) / n,
        "top5": sum(r.top5_match for r in records) / n,
        "top1_mismatches": sum(not r.top1_match for r in records),
        "top5_mismatches": sum(not r.top5_match for r in records),
        "top1_near_ties": sum(r.top1_near_tie for r in records),
        "top5_near_ties": sum(r.top5_near_tie for r in records),
        "real_top1_mismatches": sum(r.real_top1_mismatch for r in records),
        "zero_target_count": sum(r.zero_target for r in records),
        "zero_target_examples": sorted(r.key for r in records if r.zero_target)[:5],
    }


def worst_images(records: Sequence[ImageRecord], count: int, name: Callable[[int], str]) -> list[dict[str, Any]]:
    """The images whose outputs moved most (lowest cosine; ties by path), with both sides' top-1."""
    ranked = sorted(records, key=lambda r: (r.cosine, -r.rel_l2, r.key))[:count]
    return [{
        "path": r.key, "label": r.label, "cosine": r.cosine, "rel_l2": r.rel_l2, "max_abs_diff": r.max_abs_diff,
        "reference_top1": r.reference_top5[0], "target_top1": r.target_top5[0],
        "reference_top1_name": name(r.reference_top5[0]), "target_top1_name": name(r.target_top5[0]),
        "top1_match": r.top1_match, "top1_near_tie": r.top1_near_tie,
    } for r in ranked]


def disagreeing_classes(records: Sequence[ImageRecord], count: int, name: Callable[[int], str]) -> list[dict[str, Any]]:
    """Classes with the most top-1 disagreements: by true label when labelled, else by the reference's top-1."""
    groups: dict[int, list[ImageRecord]] = defaultdict(list)
    for r in records:
        groups[r.label if r.label is not None else r.reference_top5[0]].append(r)
    rows: list[dict[str, Any]] = []
    for cls, members in groups.items():
        disagreements = sum(not r.top1_match for r in members)
        if disagreements:
            labelled = members[0].label is not None
            rows.append({
                "class": cls, "name": name(cls), "images": len(members), "top1_disagreements": disagreements,
                "rate": disagreements / len(members),
                "reference_correct": sum(r.reference_top5[0] == cls for r in members) if labelled else None,
                "target_correct": sum(r.target_top5[0] == cls for r in members) if labelled else None,
            })
    rows.sort(key=lambda row: (-row["top1_disagreements"], -row["rate"], row["class"]))
    return rows[:count]


def verdict(records: Sequence[ImageRecord], criteria: Criteria, max_disagreement: float, max_accuracy_drop: float,
            accuracy_figures: dict[str, Any] | None) -> list[Check]:
    """The run's judge (``criteria.judge``) applied to every image, plus dataset-scale rates.

    A single real top-1 flip is allowed per ``max_disagreement`` share of the images (at dataset scale a few
    flips between classes closer than twice the error are expected at reduced precision), and the target's
    top-1 accuracy may fall below the reference's by at most ``max_accuracy_drop``.
    """
    elements = sum(r.num_elements for r in records)
    cosines, rel_l2s = [r.cosine for r in records], [r.rel_l2 for r in records]
    zeros = [r.key for r in records if r.zero_reference]
    evidence = Evidence(
        worst_cosine=cosines[worst_index(cosines, worst_is_low=True)],
        worst_rel_l2=rel_l2s[worst_index(rel_l2s, worst_is_low=False)],
        within_share=sum(r.within_rtol for r in records) / elements,
        nonfinite_reference=sum(r.nonfinite_reference for r in records),
        nonfinite_target=sum(r.nonfinite_target for r in records),
        zero_reference_samples=len(zeros),
        where={"min_sample_cosine": records[worst_index(cosines, worst_is_low=True)].key,
               "max_sample_rel_l2": records[worst_index(rel_l2s, worst_is_low=False)].key,
               "zero_reference_outputs": zero_reference_where(zeros, len(records))},
    )
    checks = judge(criteria, evidence)
    checks.append(check("real_top1_mismatch_rate", sum(r.real_top1_mismatch for r in records) / len(records), "<=",
                        max_disagreement))
    if accuracy_figures is not None:
        drop = accuracy_figures["reference"]["top1"] - accuracy_figures["target"]["top1"]
        checks.append(check("top1_accuracy_drop", drop, "<=", max_accuracy_drop))
    return checks


def summarise(records: Sequence[ImageRecord], criteria: Criteria, max_disagreement: float, max_accuracy_drop: float,
              worst: int, name: Callable[[int], str]) -> dict[str, Any]:
    """Everything eval.json reports about the comparison (figures only; provenance is added by report.py)."""
    acc = accuracy(records)
    checks = verdict(records, criteria, max_disagreement, max_accuracy_drop, acc)
    return {
        "passed": all(c.passed for c in checks),
        "num_images": len(records),
        "accuracy": acc,
        "agreement": agreement(records),
        "distributions": {
            "cosine": distribution([r.cosine for r in records]),
            "rel_l2": distribution([r.rel_l2 for r in records]),
            "max_abs_diff": distribution([r.max_abs_diff for r in records]),
        },
        "checks": [vars(c) for c in checks],
        "worst_images": worst_images(records, worst, name),
        "classes_most_disagreement": disagreeing_classes(records, worst, name),
    }
