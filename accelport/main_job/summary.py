"""summary.json: the original report's top-level fields, plus everything needed to trust and reproduce them.

``RunSummary`` is the document as typed values (the run's own ParityResult, LatencyReport, WeightsInfo, proof);
``to_json`` writes it in summary.json's field order, ``to_log`` and ``to_markdown`` render it (report.py). The
schema is documented in README.md ("summary.json"); bump SCHEMA_VERSION on any incompatible change.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..job.header import REFERENCE, DocumentHeader, model_record, target_record, weights_fields, weights_record
from ..preprocess import dark_image_notes
from . import report

if TYPE_CHECKING:
    from ..criteria import Criteria
    from ..job.context import JobContext
    from ..latency import LatencyReport
    from ..parity import ParityResult, SampleParity
    from ..preprocess import ImageBatch, ImageStream
    from ..proofs import StructuralProof, WeightDifferences
    from ..weights import WeightsInfo

SCHEMA_VERSION = 2  # 2: honest NaN metrics, near-ties from the baseline, nonfinite checks (README)


@functools.lru_cache(maxsize=1)
def _imagenet_info():
    from timm.data import ImageNetInfo

    return ImageNetInfo()


def class_label(index: int, num_classes: int) -> str:
    """ImageNet-1k description (timm ships them) for 1000-class models; the index otherwise."""
    if num_classes == 1000:
        return _imagenet_info().index_to_description(index)
    return str(index)


@dataclass(frozen=True)
class RunSample:
    """One image: its parity and, for a classifier, both sides' top-5 as labels (``None`` for features)."""

    path: str
    parity: SampleParity
    reference_labels: tuple[str, ...] | None = None
    target_labels: tuple[str, ...] | None = None

    @property
    def is_classifier(self) -> bool:
        return self.reference_labels is not None

    def to_json(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"path": self.path, "metrics": self.parity.metrics.to_json()}
        if self.is_classifier:
            s = self.parity
            entry.update(reference_top5=s.reference_top5, target_top5=s.target_top5,
                         reference_top5_labels=list(self.reference_labels or ()),
                         target_top5_labels=list(self.target_labels or ()), top1_match=s.top1_match,
                         top5_match=s.top5_match, top1_near_tie=s.top1_near_tie, top5_near_tie=s.top5_near_tie)
        return entry


@dataclass(frozen=True)
class RunInputs:
    """How many images were compared, the files skipped (``--skip-bad-images``) with the reason, and notes on images
    that were compared but may not show what the user meant (a 16-bit image decoded nearly black)."""

    num_images: int
    skipped: tuple[tuple[str, str], ...] = ()
    notes: tuple[tuple[str, str], ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"num_images": self.num_images, "skipped": [{"path": p, "reason": r} for p, r in self.skipped],
                "notes": [{"path": p, "note": n} for p, n in self.notes]}


@dataclass(frozen=True)
class RunSummary:
    """The run's result document (summary.json); ``status`` follows the parity verdict and the structural proof."""

    header: DocumentHeader
    weights: WeightsInfo
    output_shape: list[int]
    inputs: RunInputs
    parity: ParityResult
    latency: LatencyReport
    samples: tuple[RunSample, ...]
    structural_proof: StructuralProof | None = None
    target_weights: WeightsInfo | None = None  # --target-weights: the target side's own checkpoint
    # ... and the tensors in which it differs from --weights (beyond a half-precision copy's rounding)
    weight_differences: WeightDifferences | None = None
    power_report: str | None = None  # power.md of `accelport power` in the same folder
    layer_report: str | None = None  # layers.md, or None when the layer comparison could not run ...
    layers_not_run: str | None = None  # ... and why (summary.json and report.md say it)
    layers_requested: bool = False  # ... after --layers-on-fail on a failing run (then the key is written)
    layers_answer: dict[str, str | None] | None = None  # ... and the module it names per mode (LayersDocument.answer)

    @property
    def weights_caution(self) -> str | None:
        """A PASS beside --target-weights tensors that differ and reach the outputs (``passed_caution``)."""
        if not self.passed or self.weight_differences is None:
            return None
        proof = self.structural_proof
        return self.weight_differences.passed_caution(proof.reason if proof is not None and proof.status == "skipped"
                                                      else None)

    @property
    def passed(self) -> bool:
        return self.parity.passed and not (self.structural_proof is not None and self.structural_proof.failed)

    @property
    def status(self) -> str:
        return "passed" if self.passed else "failed"

    @property
    def criteria(self) -> Criteria:
        return self.parity.criteria

    @property
    def input_blind(self) -> bool | None:
        """Neither the verdict nor the structural proof (strict fp32, when it ran) could see a target that ignores
        its input: the reference barely depends on these images (``ParityResult.input_blind``). None: not judged
        (one image)."""
        blind = self.parity.input_blind
        if blind is None:
            return None
        proof = self.structural_proof.parity if self.structural_proof is not None else None
        return blind and (proof is None or bool(proof.input_blind))

    def to_json(self) -> dict[str, Any]:
        overall, weights = self.parity.overall, self.weights
        data = {
            # The original Ascend report's fields, same names and meaning.
            "status": self.status,
            **weights_fields(weights),
            "output_shape": self.output_shape,
            "max_abs_diff": overall.max_abs_diff,
            "mean_abs_diff": overall.mean_abs_diff,
            "cosine_similarity": overall.cosine_similarity,
            "top1_match": self.parity.top1_match,
            "top5_match": self.parity.top5_match,
            "match_within_1_percent": overall.share_within_1e_2 >= 0.99,
            "latency_ms": self.latency.compute.mean_ms,
            # Added by accelport.
            **self.header.to_json(),
            "weight_sha256": weights.sha256,
            "weights": weights_record(weights),
            "inputs": self.inputs.to_json(),
            "criteria": self.criteria.to_json() | {"overridden": self.criteria.overridden()},
            "parity": self.parity.to_json(),
            "input_blind": self.input_blind,
            "latency": self.latency.to_json(),
            "samples": [sample.to_json() for sample in self.samples],
        }
        if self.structural_proof is not None:
            data["structural_proof"] = self.structural_proof.to_json()
        if self.target_weights is not None:
            data["target_weights"] = self.target_weights.to_json() | {"flag": "--target-weights"} | (
                self.weight_differences.to_json() if self.weight_differences else {}) | {
                "caution": self.weights_caution}
        if self.power_report is not None:
            data["power_report"] = self.power_report
        if self.layers_requested:
            data["layer_report"] = self.layer_report
        if self.layers_answer is not None:
            data["layers_answer"] = self.layers_answer
        if self.layers_not_run:
            data["layers_not_run"] = self.layers_not_run
        return data

    def to_log(self) -> str:
        """accuracy_compare.log (also what ``accelport run`` prints)."""
        return report.render_log(self)

    def to_markdown(self) -> str:
        """report.md."""
        return report.render_report(self)


def build_summary(
    job: JobContext,
    batch: ImageBatch | ImageStream,
    runner_settings: dict[str, Any],
    parity: ParityResult,
    latency: LatencyReport,
    output_shape: list[int],
    proof: StructuralProof | None = None,
    power_report: str | None = None,
    weight_differences: WeightDifferences | None = None,
) -> RunSummary:
    """The run's document from what it measured; the header's clock stops here."""
    header = DocumentHeader.of(SCHEMA_VERSION, job, model=model_record(job), reference=REFERENCE,
                               target=target_record(job, runner_settings, parity.criteria.precision))
    return RunSummary(
        header, job.loaded.weights, output_shape,
        RunInputs(len(batch.paths), tuple((str(p), r) for p, r in batch.skipped),
                  tuple(dark_image_notes(batch.paths))),
        parity, latency, _samples(batch, parity, job.loaded.num_classes), proof,
        target_weights=job.target_model.weights if job.separate_target else None, power_report=power_report,
        weight_differences=weight_differences)


def _samples(batch: ImageBatch | ImageStream, parity: ParityResult, num_classes: int) -> tuple[RunSample, ...]:
    """Per image: its metrics and, for a classifier, both sides' top-5 labelled."""
    labels = functools.partial(class_label, num_classes=num_classes)
    if not parity.is_classifier:
        return tuple(RunSample(str(path), sample) for path, sample in zip(batch.paths, parity.samples, strict=True))
    return tuple(RunSample(str(path), sample, tuple(labels(i) for i in sample.reference_top5 or ()),
                           tuple(labels(i) for i in sample.target_top5 or ()))
                 for path, sample in zip(batch.paths, parity.samples, strict=True))
