"""layers.json as a typed document: the shared header, the inputs, the comparison (and its strict fp32 pass) and
the model output's verdict; ``to_json`` writes layers.json's fields in order, ``to_markdown``/``to_csv`` render it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..formatting import listed
from ..parity import zero_target_caution
from . import render
from .render import Divergence, first_divergence
from .verdict import FAILING, OutputVerdict, layers_status

if TYPE_CHECKING:
    from ..job.header import DocumentHeader
    from .compare import LayerComparison


@dataclass(frozen=True)
class LayersInputs:
    """The images compared (in order), the batch size, and the files skipped with the reason."""

    num_images: int
    batch_size: int
    images: tuple[str, ...]
    skipped: tuple[tuple[str, str], ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"num_images": self.num_images, "batch_size": self.batch_size, "images": list(self.images),
                "skipped": [{"path": p, "reason": r} for p, r in self.skipped]}


@dataclass(frozen=True)
class LayersDocument:
    """The layer comparison's result; ``status`` is one of ``verdict.STATUSES`` (exit 1 for ``FAILING``)."""

    header: DocumentHeader
    inputs: LayersInputs
    comparison: LayerComparison
    verdict: OutputVerdict
    structural: LayerComparison | None = None  # the same target in strict fp32 (half precision, fp32-fast)
    # the strict fp32 pass's reference, rounded like a half-precision --target-weights copy (RoundedReference.to_json)
    structural_rounded: dict[str, Any] | None = None

    @property
    def status(self) -> str:
        return layers_status(self.comparison, self.structural, self.verdict)

    @property
    def diverged(self) -> bool:
        return self.status in FAILING

    def zero_target_caution(self) -> str | None:
        """run's caution when the target's model output is all zeros where the reference's is not (console and
        layers.md): the first divergent module alone does not say it."""
        parity = self.verdict.parity
        if parity is None:
            return None
        random_init = not (self.header.target or {}).get("weights", {}).get("pretrained_used", True)
        return zero_target_caution(len(parity.zero_target), len(parity.samples), listed(parity.zero_target),
                                   parity.criteria.precision, random_init)

    def first_divergent(self, mode: str) -> Divergence | None:
        """In ``mode``, the strict fp32 pass's first divergent module where that pass ran and diverges, else the
        target's own. Strict fp32 diverges only for a weight or layout fault, at its own module; the target
        precision's error can cross a per-module limit modules after it (regnety_002 in bf16: a scaled conv named as
        the SE block after it) or before it (ViT on OpenVINO int8: int8's own error at blocks.0.attn.proj, the q/k
        swap in blocks.5, where a correct port diverges at the same module)."""
        strict = first_divergence(self.structural, mode) if self.structural is not None else None
        return strict or first_divergence(self.comparison, mode)

    def answer(self) -> dict[str, str | None]:
        """Per mode, the module ``first_divergent`` names (layers.json ``answer``, run's summary and report)."""
        return {mode: (found.row.key if (found := self.first_divergent(mode)) else None)
                for mode in self.comparison.modes}

    def precision_error_only(self) -> str | None:
        """Why a module is named though no weight or layout fault is there: the target's own pass diverges and the
        same target in strict fp32 does not (the precision's own error: int8 on a correct ViT or ResNet); None
        otherwise."""
        if self.structural is None or self.structural.diverged or not self.comparison.diverged:
            return None
        precision = self.comparison.criteria.precision
        return (f"the same target in strict fp32 diverges at no module, so the weights and layout arrived intact: "
                f"the module named is where {precision}'s own error first crosses a per-module limit, not a fault")

    def to_json(self) -> dict[str, Any]:
        data = {"status": self.status, **self.header.to_json(), "inputs": self.inputs.to_json(),
                **self.comparison.to_json(), "output_verdict": self.verdict.to_json()}
        if self.structural is not None:  # the modules of the same target in strict fp32, judged by fp32 criteria
            data["structural"] = {"dtype": "fp32", "criteria": "fp32", "diverged": self.structural.diverged,
                                  "first_divergent": self.structural.to_json()["first_divergent"],
                                  **({"reference_rounded_like_target_weights": self.structural_rounded}
                                     if self.structural_rounded else {})}
        # the answer: first_divergent above is the target's own pass; a JSON reader got int8's own error from it
        data["answer"] = {"rule": render.ANSWER_RULE, **self.answer(),
                          **({"reading": reading} if (reading := self.precision_error_only()) else {})}
        return data

    def to_markdown(self) -> str:
        """layers.md, the layer report that report.md links to."""
        return render.render_markdown(self)

    def to_csv(self) -> str:
        """layers.csv: one row per module call."""
        return render.render_csv(self)
