"""The main job: real weights, real images, CPU fp32 reference vs target, parity, latency, artifacts."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..atomic import check_writable_dir
from ..criteria import criteria_for, effective_precision
from ..devices import apply_numeric_settings, resolve_device
from ..errors import RuntimeUnavailableError, UsageError
from ..latency import make_batch, measure_latency
from ..models import LoadedModel, load_model, load_target_model
from ..parity import compare_outputs
from ..preprocess import ImageBatch, ImageStream, data_config_for, discover_images, load_images, make_transform
from ..proofs import StructuralProof, baseline_outputs, check_not_fp32, nonfinite_weights, structural_proof
from ..resources import check_batch_fits
from ..runners import Runner, create_runner, infer_all
from .config import RunConfig
from .report import write_artifacts
from .summary import build_summary

_logger = logging.getLogger(__name__)


@dataclass
class RunResult:
    """What a run produced: the summary (as written to summary.json), the outputs, and the artifact paths."""

    summary: dict[str, Any]
    reference: np.ndarray
    target: np.ndarray
    artifacts: dict[str, Path] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.summary["status"] == "passed"


def validate(config: RunConfig) -> None:
    for name in ("batch_size", "iters", "streams"):
        if getattr(config, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} {getattr(config, name)}: must be at least 1")
    if config.micro_batch is not None and config.micro_batch < 1:
        raise UsageError(f"--micro-batch {config.micro_batch}: must be at least 1")
    if config.warmup < 0:
        raise UsageError(f"--warmup {config.warmup}: must be at least 0")
    if not math.isfinite(config.hub_timeout_s) or config.hub_timeout_s <= 0:  # nan compares false with anything
        raise UsageError(f"--hub-timeout {config.hub_timeout_s}: must be positive")


def run(config: RunConfig | None = None, **overrides: Any) -> RunResult:
    """Run the whole job and write the artifacts; ``overrides`` replace fields of ``config``."""
    config = replace(config or RunConfig(), **overrides)
    validate(config)
    check_writable_dir(config.out_dir, "--out-dir")  # before minutes of compute, not after
    started = time.time()
    device = resolve_device(config.device)
    numeric = apply_numeric_settings(device, config.fp32_math)
    precision = effective_precision(config.dtype, config.fp32_math, device.type)
    criteria = criteria_for(precision, dict(config.criteria))

    image_paths = discover_images(list(config.images))  # a missing input fails before the weights are read
    loaded = load_model(config.model, config.head, config.weights, config.require_pretrained,
                        config.hub_timeout_s, config.seed)
    target_model = load_target_model(config) if config.target_weights else loaded
    data_config = data_config_for(loaded.model, config.test_size)
    check_batch_fits(config.batch_size, data_config.values["input_size"])  # before any image is decoded
    batch = ImageStream(image_paths, make_transform(data_config), config.skip_bad_images)
    _logger.info("%d image file(s) at %s, %s on %s (%s, fp32 math %s)", len(image_paths),
                 "x".join(map(str, data_config.values["input_size"])), loaded.name, device, config.dtype,
                 config.fp32_math)

    auto = None
    if config.runtime == "auto":  # the fastest runtime passing parity at this dtype and batch size (bench pick)
        from ..bench.pick import resolve_auto

        auto = resolve_auto(config, loaded, make_batch(batch.head(config.batch_size), config.batch_size), device)
        config = replace(config, runtime=auto.runtime, channels_last=auto.channels_last, streams=auto.streams,
                         micro_batch=auto.micro_batch)
    # Built first: an unsupported runtime/dtype/flag combination is an error before the reference is computed.
    def make_target(dtype: str) -> Runner:
        return create_runner(config.runtime, target_model.model, device, dtype, config.channels_last,
                             streams=config.streams, micro_batch=config.micro_batch)

    def infer(runner: Runner) -> np.ndarray:
        return infer_all(runner, batch.batches(config.batch_size))

    target_runner = make_target(config.dtype)
    with create_runner("eager", loaded.model, torch.device("cpu"), "fp32") as reference_runner:
        reference = infer(reference_runner)
    baseline = baseline_outputs(loaded.model, config.dtype, infer)  # a correct implementation of the precision
    timed_batch = make_batch(batch.head(config.batch_size), config.batch_size)  # real images, cycled if fewer
    with target_runner:
        target_runner.warm_up(timed_batch)  # export/compile: setup_s, not latency
        target = infer(target_runner)
        latency = measure_latency(target_runner, timed_batch, config.warmup, config.iters)
        runner_settings = target_runner.describe() | ({"auto": auto.to_json()} if auto else {})

    check_not_fp32(config.dtype, target, reference)  # even without the structural proof
    names = [str(p) for p in batch.paths]
    is_classifier = config.head == "classifier"
    weights = {"reference": loaded.model} | ({"target": target_model.model} if target_model is not loaded else {})
    parity = compare_outputs(reference, target, criteria, is_classifier, baseline=baseline, sample_names=names,
                             nonfinite_weights=nonfinite_weights(weights))
    proof = structural_proof(precision, config.structural_proof, lambda: make_target("fp32"), device,
                             config.fp32_math, infer, reference, target, is_classifier, names)
    summary = build_summary(config, loaded, data_config, batch, device, numeric, runner_settings, parity, latency,
                            output_shape=list(target.shape), wall_s=time.time() - started)
    _add_proofs(summary, proof, target_model if target_model is not loaded else None, Path(config.out_dir))
    if config.layers_on_fail and summary["status"] == "failed":
        summary["layer_report"] = _localise(config, loaded, batch)
    result = RunResult(summary, reference, target)
    result.artifacts = write_artifacts(Path(config.out_dir), summary, reference if config.save_outputs else None,
                                       target if config.save_outputs else None)
    return result


def _add_proofs(summary: dict[str, Any], proof: StructuralProof, target_model: LoadedModel | None,
                out_dir: Path) -> None:
    """The structural proof (its failure fails the run), the target-side checkpoint, and a power report if any."""
    summary["structural_proof"] = proof.to_json()
    if target_model is not None:
        summary["target_weights"] = asdict(target_model.weights) | {"flag": "--target-weights"}
    if proof.failed:
        summary["status"] = "failed"
    if (out_dir / "power.md").is_file():  # written by `accelport power` into the same folder
        summary["power_report"] = "power.md"


def _localise(config: RunConfig, loaded: LoadedModel, stream: ImageStream) -> str | None:
    """Parity failed: run the layer comparison on the same model and images, for report.md to link."""
    from ..layers import LayersConfig, run_layers

    images = ImageBatch(load_images(stream.paths, stream.transform).tensor, stream.paths, stream.skipped)
    try:
        run_layers(LayersConfig.from_run_config(config), loaded=loaded, images=images)
    except RuntimeUnavailableError as exc:  # e.g. an ONNX Runtime target: say why, keep the run's own result
        _logger.warning("layer comparison not run: %s", exc)
        return None
    return "layers.md"
