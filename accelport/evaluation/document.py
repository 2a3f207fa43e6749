"""eval.json as a typed document: the shared header, the weights' provenance, the dataset, the run, the figures.

Built once by rank 0 (api.py), written as eval.json and rendered as eval.md from the same object (report.py).
``to_json`` gives exactly the fields and order eval.json has always had (schema_version 1).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any

from ..criteria import Check
from ..job.header import DocumentHeader, weights_fields, weights_record
from ..weights import WeightsInfo

if TYPE_CHECKING:
    from .dataset import DatasetListing

SCHEMA_VERSION = 1
KIND = "accelport-eval"


def _as_json(obj: Any) -> dict[str, Any]:
    return {f.name: getattr(obj, f.name) for f in fields(obj)}


@dataclass(frozen=True)
class EvalDataset:
    """The folder, how many images it lists and how many were evaluated, its labels, the files skipped and why."""

    root: str
    num_images: int  # listed
    num_evaluated: int  # read and compared (the listed ones less the skipped)
    labels: dict[str, Any]  # where the labels came from (labels.py)
    skipped: list[dict[str, str]]  # {"path", "reason"}, with --skip-bad-images

    @classmethod
    def of(cls, listing: DatasetListing, num_evaluated: int, skipped: list[dict[str, str]]) -> EvalDataset:
        return cls(str(listing.root), len(listing.items), num_evaluated, listing.labels.to_json(), skipped)


@dataclass(frozen=True)
class EvalRun:
    """How the evaluation ran: processes, batch, loader workers, what came from the journal and the reference cache."""

    world_size: int
    backend: str | None
    master_addr: str | None
    batch_size: int
    workers: int
    resumed_images: int
    evaluated_now: int
    reference_cache: dict[str, Any] | None  # {"dir", "hits", "misses"}; None: no --reference-cache


@dataclass(frozen=True)
class EvalThroughput:
    """Images per second per stage (loop.StageTimes), and whether the loop waited for its data."""

    stages: list[dict[str, Any]]  # {"stage", "images_per_s", "seconds"}
    loader_workers: int
    data_wait_s: float
    data_wait_share: float
    bottleneck: str
    raw: dict[str, float]


@dataclass(frozen=True)
class EvalDocument:
    """eval.json. ``passed`` is the verdict: every check passed."""

    header: DocumentHeader
    weights: WeightsInfo
    dataset: EvalDataset
    run: EvalRun
    criteria: dict[str, Any]  # the precision's criteria and the dataset-scale limits, as applied
    throughput: EvalThroughput
    accuracy: dict[str, Any] | None  # None: no labels
    agreement: dict[str, Any]
    distributions: dict[str, dict[str, float]]
    checks: tuple[Check, ...]
    worst_images: list[dict[str, Any]]
    classes_most_disagreement: list[dict[str, Any]]

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def status(self) -> str:
        return "passed" if self.passed else "failed"

    @property
    def target(self) -> dict[str, Any]:
        return self.header.target or {}

    @property
    def reading(self) -> str | None:
        """Why a failed evaluation whose structural proof passed failed (as ``run`` says it): the precision's own
        error, not the port's. None otherwise."""
        from ..proofs import own_error_reading, reads_as_own_error

        proof = self.target.get("structural_proof") or {}
        if self.passed or not reads_as_own_error(proof.get("status"), [c.name for c in self.checks if not c.passed]):
            return None
        rounded = (proof.get("reference_rounded_like_target_weights") or {}).get("tensors_rounded")
        return own_error_reading(self.target.get("precision", self.target.get("dtype", "")),
                                 self.target.get("calibration_images"), not self.weights.pretrained_used,
                                 self.target.get("int8_scales_at_floor"), sorted(rounded) if rounded else None)

    @classmethod
    def of(cls, header: DocumentHeader, weights: WeightsInfo, dataset: EvalDataset, run: EvalRun,
           criteria: dict[str, Any], throughput: dict[str, Any], figures: dict[str, Any]) -> EvalDocument:
        """From aggregate.summarise's ``figures`` (its ``passed`` and ``num_images`` are the checks' and the
        dataset's) and loop.StageTimes' ``throughput``."""
        return cls(header, weights, dataset, run, criteria, EvalThroughput(**throughput), figures["accuracy"],
                   figures["agreement"], figures["distributions"], tuple(Check(**c) for c in figures["checks"]),
                   figures["worst_images"], figures["classes_most_disagreement"])

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EvalDocument:
        weights = WeightsInfo(**{f.name: data["weights"].get(f.name) for f in fields(WeightsInfo)})
        return cls(DocumentHeader.from_json(data), weights, EvalDataset(**data["dataset"]), EvalRun(**data["run"]),
                   data["criteria"], EvalThroughput(**data["throughput"]), data["accuracy"], data["agreement"],
                   data["distributions"], tuple(Check(**c) for c in data["checks"]), data["worst_images"],
                   data["classes_most_disagreement"])

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": KIND, "status": self.status, **weights_fields(self.weights), "weight_sha256": self.weights.sha256,
            "weights": weights_record(self.weights), **self.header.to_json(),
            "dataset": _as_json(self.dataset), "run": _as_json(self.run), "criteria": self.criteria,
            "throughput": _as_json(self.throughput), "accuracy": self.accuracy, "agreement": self.agreement,
            "distributions": self.distributions, "checks": [asdict(c) for c in self.checks],
            "worst_images": self.worst_images, "classes_most_disagreement": self.classes_most_disagreement,
        }

    def to_markdown(self, histogram: str | None = None) -> str:
        """eval.md; ``histogram`` is the name of eval_hist.png next to it, when it was written."""
        from .report import render_markdown

        return render_markdown(self, histogram)
