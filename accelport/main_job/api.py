"""The main job: real weights, real images, CPU fp32 reference vs target, parity, latency, artifacts."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..devices import caller_torch_state
from ..errors import RuntimeUnavailableError, WeightsError
from ..formatting import listed, one_line, printable
from ..job.context import JobContext, open_job
from ..job.result import CommandResult
from ..job.spec import Target, with_overrides
from ..latency import LatencyReport, make_batch, measure_latency
from ..out_dir_lock import job_scope
from ..parity import ParityResult, compare_outputs
from ..preprocess import ImageBatch, ImageStream, load_images
from ..proofs import (
    UNSEEN_CHECK_IMAGES,
    baseline_outputs,
    check_not_fp32,
    nonfinite_weights,
    proof_reference_outputs,
    structural_proof,
    weight_differences,
)
from ..resources import check_batch_fits
from ..runners import QUANTIZED_DTYPES, Runner, create_runner, infer_all
from ..runners.quantize import calibration_overlap
from .config import RunConfig
from .report import write_artifacts
from .summary import RunSummary, build_summary

if TYPE_CHECKING:
    from ..bench.pick import AutoChoice
    from ..layers.document import LayersDocument

_logger = logging.getLogger(__name__)



@dataclass
class RunResult(CommandResult[RunSummary]):
    """What a run produced: the typed summary document, both sides' outputs, and the artifact paths."""

    reference: np.ndarray = field(kw_only=True)
    target: np.ndarray = field(kw_only=True)

    @property
    def summary(self) -> dict[str, Any]:
        """The summary as written to summary.json."""
        return self.data

    @property
    def passed(self) -> bool:
        return self.document.passed


@dataclass
class _Outputs:
    """What the runners produced: both sides' outputs, the same-precision baseline, the latency, the settings."""

    reference: np.ndarray
    target: np.ndarray
    baseline: np.ndarray | None
    latency: LatencyReport
    runner_settings: dict[str, Any]


@caller_torch_state()
@job_scope
def run(config: RunConfig | None = None, **overrides: Any) -> RunResult:
    """Run the whole job and write the artifacts; ``overrides`` (flat flag names) replace fields of ``config``."""
    config = with_overrides(config or RunConfig(), **overrides)
    config.validate()  # before minutes of compute, not after
    job = open_job(config.spec)
    stream = _image_stream(job, config.target)
    target, auto = _choose_target(job, config, stream)
    try:
        outputs = _infer_and_time(job, config, target, stream, auto)
    except RuntimeUnavailableError as exc:
        _refuse_nonfinite_weights(job, target, exc)
        raise
    differences = weight_differences(job, stream.head(UNSEEN_CHECK_IMAGES))
    parity = _parity(job, target, stream, outputs)
    precision = job.precision(target.dtype)
    rounded = job.rounded_reference() if config.structural_proof and precision != "fp32" else None

    def infer(runner: Runner) -> np.ndarray:
        return _infer(runner, stream, target)

    proof = structural_proof(precision, config.structural_proof, lambda: _target_runner(job, target, "fp32"),
                             job.device, job.spec.fp32_math, infer,
                             proof_reference_outputs(rounded, outputs.reference, infer), outputs.target,
                             parity.is_classifier, [str(p) for p in stream.paths], rounded)
    power = _power_report(job, target)
    document = build_summary(job, stream, outputs.runner_settings, parity, outputs.latency,
                             output_shape=list(outputs.target.shape), proof=proof, power_report=power,
                             weight_differences=differences)
    if caution := document.weights_caution:  # the outputs moved, within the criteria
        _logger.warning("%s", caution)
    layers = None
    if config.layers_on_fail and not document.passed:
        from ..layers.render import FILES as LAYER_FILES

        layers, not_run = _localise(job, target, stream)
        document = replace(document, layer_report=LAYER_FILES["markdown"] if layers else None, layers_requested=True,
                           layers_not_run=not_run, layers_answer=layers.answer() if layers else None)
        if layers:
            _logger.info("--layers-on-fail: first divergent module: %s (layers.md)",
                         ", ".join(f"{mode} {module or 'none'}" for mode, module in layers.answer().items()))
    saved = (outputs.reference, outputs.target) if config.save_outputs else (None, None)
    result = RunResult(document, reference=outputs.reference, target=outputs.target)
    result.artifacts = write_artifacts(Path(job.spec.out_dir), document, *saved, layers=layers)
    return result


def _refuse_nonfinite_weights(job: JobContext, target: Target, failure: RuntimeUnavailableError) -> None:
    """A quantiser that cannot calibrate weights holding NaN/Inf (ONNX Runtime's "scale issue", torch.histc's
    non-finite range) is no engine failure: name the tensor, as an fp32 run's nonfinite_weights check does."""
    if target.dtype not in QUANTIZED_DTYPES:
        return
    side = job.target_model if job.separate_target else job.loaded
    if bad := nonfinite_weights({"target": side.model}, report=False):
        flag = "--target-weights" if job.separate_target else "--weights"
        raise WeightsError(f"{flag} {side.weights.path}: {listed([key.partition(': ')[2] for key in bad])} hold(s) "
                           f"NaN/Inf: {target.runtime} cannot quantise such weights to {target.dtype} "
                           f"({one_line(str(failure), 160)}); the {'port' if job.separate_target else 'checkpoint'} "
                           "is broken, as an fp32 run says (exit 1, nonfinite_weights)") from None


def _image_stream(job: JobContext, target: Target) -> ImageStream:
    """The run's images, decoded batch by batch; a batch that cannot fit is refused before any image is decoded."""
    check_batch_fits(target.batch_size, job.input_size, model=job.loaded.model)
    _logger.info("%d image file(s) at %s, %s on %s (%s, fp32 math %s)", len(job.image_paths),
                 "x".join(map(str, job.input_size)), job.loaded.name, job.device, target.dtype, job.spec.fp32_math)
    return job.image_stream()


def _choose_target(job: JobContext, config: RunConfig, stream: ImageStream) -> tuple[Target, AutoChoice | None]:
    """The target as asked, or for ``--runtime auto`` the fastest configuration passing parity (bench's pick)."""
    target = config.target
    if target.runtime != "auto":
        return target, None
    from ..bench.pick import resolve_auto

    auto = resolve_auto(job, target, make_batch(stream.head(target.batch_size), target.batch_size),
                        warmup=config.warmup, iters=config.iters)
    return auto.applied_to(target), auto


def _target_runner(job: JobContext, target: Target, dtype: str) -> Runner:
    return create_runner(target.runtime, job.target_model.model, job.device, dtype, target.channels_last,
                         **target.runner_options())


def _infer(runner: Runner, stream: ImageStream, target: Target) -> np.ndarray:
    return infer_all(runner, stream.batches(target.batch_size))


def _infer_and_time(job: JobContext, config: RunConfig, target: Target, stream: ImageStream,
                    auto: AutoChoice | None) -> _Outputs:
    """Reference, same-precision baseline, target outputs and latency, each runner opened once."""
    # Built first: an unsupported runtime/dtype/flag combination is an error before the reference is computed.
    target_runner = _target_runner(job, target, target.dtype)
    with create_runner("eager", job.loaded.model, torch.device("cpu"), "fp32") as reference_runner:
        reference = _infer(reference_runner, stream, target)
    # a correct implementation of the precision
    baseline = baseline_outputs(job.loaded.model, job.precision(target.dtype), lambda r: _infer(r, stream, target))
    timed_batch = make_batch(stream.head(target.batch_size), target.batch_size)  # real images, cycled if fewer
    with target_runner:
        target_runner.warm_up(timed_batch)  # export/compile: setup_s, not latency
        outputs = _infer(target_runner, stream, target)
        latency = measure_latency(target_runner, timed_batch, config.warmup, config.iters)
        runner_settings = target_runner.describe() | ({"auto": auto.to_json()} if auto else {})
    if target.dtype in QUANTIZED_DTYPES:  # a quantiser judged on its own calibration images flatters the verdict
        runner_settings["calibration_overlap"] = calibration_overlap(target.option("calibration"), job.image_paths)
    check_not_fp32(target.dtype, outputs, reference)  # even without the structural proof
    return _Outputs(reference, outputs, baseline, latency, runner_settings)


def _parity(job: JobContext, target: Target, stream: ImageStream, outputs: _Outputs) -> ParityResult:
    weights = {"reference": job.loaded.model} | ({"target": job.target_model.model} if job.separate_target else {})
    return compare_outputs(outputs.reference, outputs.target, job.criteria_for(target.dtype),
                           job.is_classifier, baseline=outputs.baseline,
                           sample_names=[printable(str(p)) for p in stream.paths],
                           nonfinite_weights=nonfinite_weights(weights), judge_zero_reference=True)


def _power_report(job: JobContext, target: Target) -> str | None:
    """power.md in the out dir when its power.json analysed this very target (model, weights, device, runtime,
    dtype); one left by another model or dtype was linked as this run's detection power."""
    folder = Path(job.spec.out_dir)
    try:
        analysed = json.loads((folder / "power.json").read_text())
    except (OSError, ValueError):
        return None
    wanted = {"model": job.loaded.name, "device": str(job.device), "runtime": target.runtime, "dtype": target.dtype,
              "weights_sha256": job.loaded.weights.sha256}
    if not isinstance(analysed, dict) or any(analysed.get(key) != value for key, value in wanted.items()):
        _logger.info("power.md in %s analysed another target; not linked", folder)
        return None
    return "power.md" if (folder / "power.md").is_file() else None


def _localise(job: JobContext, target: Target, stream: ImageStream) -> tuple[LayersDocument | None, str | None]:
    """Parity failed: the layer comparison on the same job (model, images, target), written with the run's files
    for report.md to link; or None and why, when the target cannot be compared module by module."""
    from ..layers import LayersConfig
    from ..layers.api import layers_document

    images = ImageBatch(load_images(stream.paths, stream.transform).tensor, stream.paths, stream.skipped)
    layers_job = replace(job, images=images, image_paths=list(stream.paths), started=time.time())  # its own clock
    try:
        return layers_document(LayersConfig(spec=job.spec, target=target), layers_job), None
    except RuntimeUnavailableError as exc:  # e.g. a compile target: say why, keep the run's own result
        _logger.warning("layer comparison not run: %s", exc)
        return None, str(exc)
