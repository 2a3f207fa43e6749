"""``run_layers``: real weights and images, the CPU fp32 reference against the target, module by module, and files.

Also the seam for ``accelport run --layers-on-fail``: pass the run's ``LoadedModel`` and ``ImageBatch`` to reuse them.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from ..criteria import Criteria, criteria_for, effective_precision
from ..devices import apply_numeric_settings, resolve_device
from ..environment import describe_environment
from ..models import LoadedModel, load_model, load_target_model
from ..preprocess import ImageBatch, data_config_for, discover_images, load_images, make_transform
from ..runners import DTYPES, create_runner
from ..weights import WeightsInfo
from .capture import TargetCast
from .compare import LayerComparison, compare_layers
from .config import LayersConfig, validate
from .memory import MemoryMonitor
from .render import write_layer_artifacts
from .verdict import FAILING, layers_status, layers_verdict, verdict_lines

_logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1


@dataclass
class LayersResult:
    """What a layer comparison produced: the layers.json data, the comparison object and the files written."""

    data: dict[str, Any]
    comparison: LayerComparison
    artifacts: dict[str, Path] = field(default_factory=dict)

    @property
    def diverged(self) -> bool:
        return self.data["status"] in FAILING  # run's checks fail the model's output (exit 1, as run)

    def first_divergent(self, mode: str) -> str | None:
        """Name of the first divergent module in ``mode`` ("chained" or "isolated"), or None; in the strict fp32
        pass of a half-precision target when its own precision shows none."""
        first = self.data["first_divergent"].get(mode) or (self.data.get("structural") or {}).get(
            "first_divergent", {}).get(mode)
        return first["module"] if first else None


def _weights_json(weights: WeightsInfo) -> dict[str, Any]:
    return asdict(weights) | {"pretrained_used": weights.pretrained_used}


def run_layers(config: LayersConfig | None = None, *, loaded: LoadedModel | None = None,
               images: ImageBatch | None = None, **overrides: Any) -> LayersResult:
    """Compare every module of the target with the reference in the configured modes and write the layer report.

    ``loaded`` (the reference model, CPU fp32) and ``images`` (preprocessed) are reused when given, as a
    failing ``run`` has them already; ``overrides`` replace fields of ``config``.
    """
    config = replace(config or LayersConfig(), **overrides)
    validate(config)
    started = time.time()
    device = resolve_device(config.device)
    numeric = apply_numeric_settings(device, config.fp32_math)
    criteria = criteria_for(effective_precision(config.dtype, config.fp32_math, device.type), dict(config.criteria))
    image_paths = discover_images(list(config.images)) if images is None else []  # before the weights are read
    loaded = loaded or load_model(config.model, config.head, config.weights, config.require_pretrained,
                                  config.hub_timeout_s, config.seed)
    target = load_target_model(config) if config.target_weights else loaded
    data_config = data_config_for(loaded.model, config.test_size)
    if images is None:
        images = load_images(image_paths, make_transform(data_config), config.skip_bad_images)
    count, size = images.tensor.shape[0], config.batch_size
    _logger.info("layers: %d image(s), batch %d, modes %s, target %s %s %s", count, size, "+".join(config.modes),
                 device, config.runtime, config.dtype)

    memory = MemoryMonitor(device).start()

    def compare_in(dtype: str, judge_by: Criteria) -> tuple[LayerComparison, dict[str, Any]]:
        with create_runner(config.runtime, target.model, device, dtype, config.channels_last) as runner:
            cast = TargetCast(device, DTYPES[dtype], config.channels_last)
            batches = (images.tensor[i : i + size] for i in range(0, count, size))
            return (compare_layers(loaded.model, runner.module, batches, judge_by, config.modes, cast,
                                   runner.to_device, device, memory), runner.describe())

    comparison, runner_settings = compare_in(config.dtype, criteria)
    structural = None
    if criteria.precision != "fp32":  # as run's structural proof, always: the same target in strict fp32
        apply_numeric_settings(device, "strict")
        try:
            structural = compare_in("fp32", criteria_for("fp32"))[0]
        finally:
            apply_numeric_settings(device, config.fp32_math)
    verdict = layers_verdict(loaded, target, images, comparison, structural, criteria, dtype=config.dtype,  # run's
                             batch_size=size, is_classifier=config.head == "classifier")  # checks on the output

    data = {
        "schema_version": SCHEMA_VERSION,
        "status": layers_status(comparison, structural, verdict),
        "created_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "wall_time_s": round(time.time() - started, 3),
        "model": {"name": loaded.name, "head": loaded.head, "num_params": loaded.num_params,
                  "data_config": data_config.to_json()},
        "reference": {"device": "cpu", "runtime": "eager", "dtype": "fp32", "weights": _weights_json(loaded.weights)},
        "target": {"device_requested": config.device, "device": str(device), "fp32_math": numeric.fp32_math,
                   "numeric_settings": numeric.effective, **runner_settings,
                   "weights": _weights_json(target.weights), "weights_same_as_reference": target is loaded},
        "environment": describe_environment(device),
        "inputs": {"num_images": count, "batch_size": size, "images": [str(p) for p in images.paths],
                   "skipped": [{"path": str(p), "reason": r} for p, r in images.skipped]},
        **comparison.to_json(),
        "output_verdict": verdict.to_json(),
    }
    if structural is not None:  # the modules of the same target in strict fp32, judged by the fp32 criteria
        data["structural"] = {"dtype": "fp32", "criteria": "fp32", "diverged": structural.diverged,
                              "first_divergent": structural.to_json()["first_divergent"]}
    result = LayersResult(data, comparison)
    result.artifacts = write_layer_artifacts(Path(config.out_dir), data)
    for mode in config.modes:
        _logger.info("layers: first divergent module (%s): %s", mode, result.first_divergent(mode) or "none")
    if structural is not None:
        _logger.info("layers: strict fp32 pass of the same target: %s", "diverged" if structural.diverged else "clean")
    return result


def describe_first_divergent(result: LayersResult) -> list[str]:
    """Console lines: the first divergent module per mode, and why."""
    lines = []
    total = len(result.data["modules"])
    for mode in result.data["modes"]:
        first = result.data["first_divergent"][mode]
        if first is None:
            growth = result.data.get("fastest_growth", {}).get(mode)
            where = "" if growth is None else (
                f"; no single module crosses a limit, the error grows fastest at {growth['module']} "
                f"({growth['type']}, row {growth['index']}: worst-image rel L2 {growth['worst_sample_rel_l2']:.3g})")
            lines.append(f"{mode:<9} no divergent module ({total} modules within the criteria){where}")
        else:
            lines.append(f"{mode:<9} first divergent module: {first['module']} ({first['type']}, row "
                         f"{first['index']} of {total}): {first['reason']}")
    structural = result.data.get("structural")
    if structural:
        for mode, first in structural["first_divergent"].items():
            lines.append(f"{mode:<9} strict fp32 pass of the same target (fp32 criteria): " + (
                "no divergent module" if first is None else
                f"first divergent module: {first['module']} ({first['type']}, row {first['index']}): "
                f"{first['reason']}"))
    return lines + verdict_lines(result.data)


__all__ = ["LayersResult", "describe_first_divergent", "load_target_model", "run_layers"]
