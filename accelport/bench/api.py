"""``accelport bench`` as an API: load the model and images once, take the CPU fp32 reference, sweep, write.

bench.json is the one result object (``schema_version``); bench.md and bench.png are rendered from it.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..criteria import criteria_for, effective_precision
from ..devices import apply_numeric_settings, resolve_device
from ..environment import describe_environment
from ..models import LoadedModel, load_model
from ..preprocess import data_config_for, discover_images, load_images, make_transform
from ..runners import create_runner
from ..runners.cache import library_versions, weights_digest
from .config import BenchConfig
from .journal import JOURNAL_NAME, JournalState, JournalWriter, read_journal
from .peers import compare_with_peers
from .pick import picks
from .roofline import add_achieved_flops, model_flops
from .sweep import SweepSettings, add_ratios, plan_configurations, reliability_summary, sweep

_logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1


@dataclass
class BenchResult:
    document: dict[str, Any]
    artifacts: dict[str, Path] = field(default_factory=dict)


def reference_outputs(model: torch.nn.Module, images: torch.Tensor) -> np.ndarray:
    """CPU eager fp32, one image at a time: the reference every configuration is judged against."""
    with create_runner("eager", model, torch.device("cpu"), "fp32") as runner:
        return torch.cat([runner.infer(images[i : i + 1]) for i in range(images.shape[0])]).numpy()


def bench_environment(device: torch.device, threads: int) -> dict[str, Any]:
    return {**describe_environment(device), **library_versions("onnxruntime", "openvino", "onnx"),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "threads": threads}


def model_record(loaded: LoadedModel, input_size: list[int], flops_per_image: int | None) -> dict[str, Any]:
    return {"name": loaded.name, "head": loaded.head, "num_params": loaded.num_params, "input_size": input_size,
            "flops_per_image": flops_per_image,
            "weights_source": loaded.weights.source, "weights_sha256": loaded.weights.sha256,
            "pretrained_used": loaded.weights.pretrained_used, "state_digest": weights_digest(loaded.model)}


def journal_fingerprint(config: BenchConfig, loaded: LoadedModel, device: torch.device,
                        images: list[str]) -> dict[str, Any]:
    """Everything that changes a figure of the sweep: a journal is resumed only under the same fingerprint."""
    settings = {k: v for k, v in vars(config).items() if k not in ("out_dir", "cache_dir", "progress", "plot",
                                                                   "resume", "images")}
    return {**settings, "images": images, "state_digest": weights_digest(loaded.model), "device": str(device),
            **{k: v for k, v in bench_environment(device, 0).items() if k not in ("threads", "torch_threads")}}


def run_sweep_document(loaded: LoadedModel, images: torch.Tensor, device: torch.device, config: BenchConfig,
                       input_size: list[int], num_images: int, journal: JournalWriter | None = None,
                       resumed: JournalState | None = None) -> dict[str, Any]:
    """The sweep on an already loaded model and preprocessed images (also used by ``run --runtime auto``)."""
    started = time.time()
    numeric = apply_numeric_settings(device, config.fp32_math)
    if config.threads:
        torch.set_num_threads(config.threads)  # eager/compile use torch's pool; ORT/OpenVINO get the same count
    threads = torch.get_num_threads()
    overrides = dict(config.criteria)
    criteria = {d: criteria_for(effective_precision(d, config.fp32_math, device.type), overrides)
                for d in (*config.dtypes, "fp32")}
    reference = reference_outputs(loaded.model, images)
    configurations = plan_configurations(config.runtimes, config.dtypes, config.channels_last, config.streams,
                                         config.micro_batches, peers=config.peers)
    settings = SweepSettings(config.warmup, config.iters, config.max_time_s, threads, config.cache_dir, config.progress,
                             config.rounds)
    records, rows = sweep(loaded.model, images, reference, device, configurations, config.batch_sizes, criteria,
                          config.head == "classifier", settings, journal, resumed)
    add_ratios(rows)
    flops_per_image = model_flops(loaded.model, [1, *input_size])
    add_achieved_flops(rows, flops_per_image)
    return {
        "schema_version": SCHEMA_VERSION,
        "created_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "wall_time_s": round(time.time() - started, 3),
        "resumed_points": resumed.points if resumed else 0,
        "timing_reliability": reliability_summary(rows),
        "model": model_record(loaded, input_size, flops_per_image),
        "device": str(device),
        "environment": bench_environment(device, threads),
        "numeric_settings": numeric.effective,
        "settings": {"runtimes": list(config.runtimes), "dtypes": list(config.dtypes),
                     "batch_sizes": list(config.batch_sizes), "channels_last": config.channels_last,
                     "streams": list(config.streams), "micro_batches": list(config.micro_batches),
                     "warmup": config.warmup, "iters": config.iters, "max_time_s": config.max_time_s,
                     "rounds": config.rounds,
                     "threads": threads, "fp32_math": config.fp32_math, "num_images": num_images,
                     "cache_dir": config.cache_dir, "peers": config.peers},
        "criteria": {d: c.to_json() for d, c in criteria.items()},
        "baseline": "eager fp32 (plain timm, contiguous) on the same device, same run",
        "configurations": records,
        "rows": rows,
        "pick": picks(rows, config.batch_sizes),
        "peer_comparison": compare_with_peers(rows),
    }


def run_bench(config: BenchConfig) -> BenchResult:
    from .report import write_bench_artifacts

    config.validate()
    device = resolve_device(config.device)
    image_paths = discover_images(list(config.images))  # a missing input fails before the weights are read
    loaded = load_model(config.model, config.head, config.weights, config.require_pretrained, config.hub_timeout_s,
                        config.seed)
    data_config = data_config_for(loaded.model, config.test_size)
    batch = load_images(image_paths, make_transform(data_config))
    path = Path(config.out_dir) / JOURNAL_NAME
    fingerprint = journal_fingerprint(config, loaded, device, [str(p) for p in batch.paths])
    resumed = read_journal(path, fingerprint) if config.resume else None
    journal = JournalWriter(path, fingerprint, fresh=not config.resume)
    try:
        document = run_sweep_document(loaded, batch.tensor, device, config, list(data_config.values["input_size"]),
                                      len(batch.paths), journal, resumed)
    except KeyboardInterrupt:
        _logger.warning("interrupted: every finished point is kept in %s; run the same command with --resume to go "
                        "on from them", path)
        raise
    finally:
        journal.close()
    return BenchResult(document, write_bench_artifacts(Path(config.out_dir), document, plot=config.plot))
