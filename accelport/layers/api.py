"""``run_layers``: real weights and images, the CPU fp32 reference against the target, module by module, and files.

Also the seam for ``accelport run --layers-on-fail``: the run passes its opened job (model, images, device).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..criteria import Criteria, criteria_for
from ..devices import apply_numeric_settings, caller_torch_state
from ..job.context import JobContext, open_job
from ..job.header import REFERENCE, DocumentHeader, model_record, target_record, weights_record
from ..job.result import CommandResult
from ..job.spec import with_overrides
from ..out_dir_lock import job_scope
from ..proofs import differing_tensors
from ..runners import DTYPES, create_runner
from .capture import TargetCast
from .compare import LayerComparison, compare_engine_layers, compare_layers
from .config import LayersConfig, check_comparable, validate
from .document import LayersDocument, LayersInputs
from .memory import MemoryMonitor
from .render import ANSWER_RULE, first_divergence, weights_differ_text, write_layer_artifacts
from .verdict import OutputVerdict, layers_verdict, verdict_lines

_logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1


@dataclass
class LayersResult(CommandResult[LayersDocument]):
    """What a layer comparison produced: the typed layers document (``data``: layers.json) and the files written."""

    @property
    def comparison(self) -> LayerComparison:
        return self.document.comparison

    @property
    def diverged(self) -> bool:
        return self.document.diverged  # run's checks fail the model's output (exit 1, as run)

    def first_divergent(self, mode: str) -> str | None:
        """Name of the first divergent module in ``mode`` ("chained" or "isolated"), or None: the strict fp32
        pass's where it diverges, else the target's own (``LayersDocument.first_divergent``)."""
        return self.document.answer().get(mode)


@caller_torch_state()
@job_scope
def run_layers(config: LayersConfig | None = None, *, job: JobContext | None = None,
               **overrides: Any) -> LayersResult:
    """Compare every module of the target with the reference in the configured modes and write the layer report.

    ``job``: an opened job to reuse (a failing ``run`` passes its own: model, images, device); ``overrides`` (flat
    flag names) replace fields of ``config``.
    """
    config = with_overrides(config or LayersConfig(), **overrides)
    validate(config)
    job = job or open_job(config.spec)
    document = layers_document(config, job)
    return LayersResult(document, write_layer_artifacts(Path(job.spec.out_dir), document))


def layers_document(config: LayersConfig, job: JobContext) -> LayersDocument:
    """The comparison and its verdict, no files: ``run --layers-on-fail`` writes them in its own report set, so
    an interruption never leaves the run's files without the layers' (or the reverse)."""
    check_comparable(config)  # run --layers-on-fail comes here without validate: a compile target is refused
    images = job.image_batch()
    _logger.info("layers: %d image(s), batch %d, modes %s, target %s %s %s", images.tensor.shape[0],
                 config.target.batch_size, "+".join(config.effective_modes), job.device, config.target.runtime,
                 config.target.dtype)
    memory = MemoryMonitor(job.device).start()
    criteria = job.criteria_for(config.target.dtype)
    comparison, runner_settings = _compare_in(job, config, config.target.dtype, criteria, memory, job.loaded.model)
    structural, rounded = None, None
    if criteria.precision != "fp32":  # as run's structural proof, always: the same target in strict fp32
        rounded = job.rounded_reference()  # a half-precision --target-weights copy: against the reference rounded
        apply_numeric_settings(job.device, "strict")
        try:
            structural = _compare_in(job, config, "fp32", criteria_for("fp32"), memory,
                                     (rounded or job.loaded).model)[0]
        finally:
            apply_numeric_settings(job.device, job.spec.fp32_math)
    verdict = layers_verdict(job.loaded, job.target_model, images, comparison, structural, criteria,  # run's checks
                             batch_size=config.target.batch_size, is_classifier=job.is_classifier)
    document = _document(job, config.target.batch_size, comparison, structural, runner_settings, verdict,
                         rounded.to_json() if rounded else None)
    for mode in config.effective_modes:
        found = document.first_divergent(mode)
        _logger.info("layers: first divergent module (%s): %s", mode, found.row.key if found else "none")
    if structural is not None:
        _logger.info("layers: strict fp32 pass of the same target: %s", "diverged" if structural.diverged else "clean")
    return document


def _compare_in(job: JobContext, config: LayersConfig, dtype: str, judge_by: Criteria, memory: MemoryMonitor,
                reference: torch.nn.Module) -> tuple[LayerComparison, dict[str, Any]]:
    """The target in ``dtype`` against ``reference`` (CPU fp32), module by module, batch by batch."""
    target, images, size = config.target, job.image_batch().tensor, config.target.batch_size
    with create_runner(target.runtime, job.target_model.model, job.device, dtype, target.channels_last,
                       **target.runner_options()) as runner:
        batches = (images[i : i + size] for i in range(0, images.shape[0], size))
        if target.runtime != "eager":  # an engine's own tensors at module boundaries (layers/engine.py)
            return compare_engine_layers(reference, runner, batches, judge_by, memory), runner.describe()
        cast = TargetCast(job.device, DTYPES[dtype], target.channels_last)
        module: torch.nn.Module = runner.module  # type: ignore[attr-defined]  # eager (config.validate)
        with runner.torch_threads():  # --threads, as the runner's own calls would run
            comparison = compare_layers(reference, module, batches, judge_by, config.effective_modes, cast,
                                        runner.to_device, job.device, memory)
        return comparison, runner.describe()


def _document(job: JobContext, batch_size: int, comparison: LayerComparison, structural: LayerComparison | None,
              runner_settings: dict[str, Any], verdict: OutputVerdict,
              rounded: dict[str, Any] | None) -> LayersDocument:
    """layers.json: the shared header, the inputs, the comparison and the strict fp32 pass if one ran."""
    images = job.image_batch()
    target = target_record(job, runner_settings) | {"weights": weights_record(job.target_model.weights),
                                                    "weights_same_as_reference": not job.separate_target}
    if job.separate_target:  # where a weight fault can be: the module that owns a differing tensor, exactly
        compared = job.rounded_reference() or job.loaded  # a half-precision copy's rounding is no difference
        target["weights_differ_in"] = differing_tensors(compared.model, job.target_model.model)
    header = DocumentHeader.of(SCHEMA_VERSION, job, model=model_record(job, num_classes=False), target=target,
                               reference=REFERENCE | {"weights": weights_record(job.loaded.weights)})
    inputs = LayersInputs(int(images.tensor.shape[0]), batch_size, tuple(str(p) for p in images.paths),
                          tuple((str(p), r) for p, r in images.skipped))
    return LayersDocument(header, inputs, comparison, verdict, structural, rounded)


def describe_first_divergent(result: LayersResult) -> list[str]:
    """Console lines: the first divergent module per mode, and why."""
    document, lines = result.document, []
    comparison, total = document.comparison, len(document.comparison.rows)
    for mode in comparison.modes:
        first = first_divergence(comparison, mode)
        if first is None:
            growth = comparison.fastest_growth(mode) if document.verdict.failed else None  # a failure's clue only
            where = "" if growth is None else (
                f"; no single module crosses a limit, the error grows fastest at {growth['module']} "
                f"({growth['type']}, row {growth['index']}: worst-image rel L2 {growth['worst_sample_rel_l2']:.3g})")
            lines.append(f"{mode:<9} no divergent module ({comparison.within_text(mode)}, all within the "
                         f"criteria){where}")
        else:
            lines.append(f"{mode:<9} first divergent module: {comparison.module_text(first.row.key)} "
                         f"({first.row.module_type}, row "
                         f"{first.index} of {total}): {first.reason}")
    if document.structural is not None:
        for mode in document.structural.modes:
            found = first_divergence(document.structural, mode)
            lines.append(f"{mode:<9} strict fp32 pass of the same target (fp32 criteria): " + (
                "no divergent module" if found is None else
                f"first divergent module: {document.structural.module_text(found.row.key)} "
                f"({found.row.module_type}, row {found.index}): "
                f"{found.reason}"))
        answer = document.answer()
        if any(answer.values()):  # the answer: strict fp32's where it diverges (LayersDocument.first_divergent)
            lines.append(f"answer    {ANSWER_RULE}: " + ", ".join(
                f"{mode} {comparison.module_text(module) if module else 'none'}" for mode, module in answer.items()))
        if own_error := document.precision_error_only():
            lines.append(f"reading   {own_error}")
    if line := weights_differ_text(document.header.target or {}):
        lines.append(f"weights   {line}")
    caution = document.zero_target_caution()
    return lines + ([caution] if caution else []) + verdict_lines(document.to_json())


__all__ = ["LayersResult", "describe_first_divergent", "run_layers"]
