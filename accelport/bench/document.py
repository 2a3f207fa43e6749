"""The sweep on an opened job, as bench.json's document (without its ``pick``, which bench/pick.py adds).

Shared by ``accelport bench`` and ``run --runtime auto``; it applies no numeric settings and sets no thread count
(the job and the caller did), so running it changes nothing process-wide.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..environment import describe_environment
from ..job.header import DocumentHeader, utc_now
from ..runners import create_runner
from ..runners.cache import library_versions, weights_digest
from .peers import compare_with_peers
from .roofline import add_achieved_flops, model_flops
from .sweep import SweepSettings, add_ratios, plan_configurations, reliability_summary, sweep

if TYPE_CHECKING:
    from ..job.context import JobContext
    from ..models import LoadedModel
    from .config import BenchConfig
    from .journal import JournalState, JournalWriter

SCHEMA_VERSION = 1


def reference_outputs(model: torch.nn.Module, images: torch.Tensor) -> np.ndarray:
    """CPU eager fp32, one image at a time: the reference every configuration is judged against."""
    with create_runner("eager", model, torch.device("cpu"), "fp32") as runner:
        return torch.cat([runner.infer(images[i : i + 1]) for i in range(images.shape[0])]).numpy()


def bench_environment(device: torch.device, threads: int) -> dict[str, Any]:
    return {**describe_environment(device), **library_versions("onnxruntime", "openvino", "onnx"),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "threads": threads}


def bench_model_record(loaded: LoadedModel, input_size: list[int], flops_per_image: int | None) -> dict[str, Any]:
    return {"name": loaded.name, "head": loaded.head, "num_params": loaded.num_params, "input_size": input_size,
            "flops_per_image": flops_per_image,
            "weights_source": loaded.weights.source, "weights_sha256": loaded.weights.sha256,
            "pretrained_used": loaded.weights.pretrained_used, "state_digest": weights_digest(loaded.model)}


def sweep_document(job: JobContext, config: BenchConfig, images: torch.Tensor, threads: int,
                   journal: JournalWriter | None = None, resumed: JournalState | None = None) -> dict[str, Any]:
    """Every configuration of ``config`` on the job's model and these preprocessed images, judged and timed."""
    started = time.time()
    criteria = {d: job.criteria_for(d) for d in (*config.dtypes, "fp32")}
    reference = reference_outputs(job.loaded.model, images)
    configurations = plan_configurations(config.runtimes, config.dtypes, config.channels_last, config.streams,
                                         config.micro_batches, peers=config.peers)
    settings = SweepSettings(config.warmup, config.iters, config.max_time_s, threads, config.cache_dir, config.progress,
                             config.rounds, config.calibration, job.spec.fp32_math)
    records, rows = sweep(job.loaded.model, images, reference, job.device, configurations, config.batch_sizes,
                          criteria, job.spec.head == "classifier", settings, journal, resumed)
    add_ratios(rows)
    flops_per_image = model_flops(job.loaded.model, [1, *job.input_size])
    add_achieved_flops(rows, flops_per_image)
    header = DocumentHeader(SCHEMA_VERSION, utc_now(), round(time.time() - started, 3),
                            bench_model_record(job.loaded, job.input_size, flops_per_image),
                            bench_environment(job.device, threads)).to_json()
    return {
        **header,
        "resumed_points": resumed.points if resumed else 0,
        "timing_reliability": reliability_summary(rows),
        "device": str(job.device),
        "numeric_settings": job.numeric.effective,
        "settings": {"runtimes": list(config.runtimes), "dtypes": list(config.dtypes),
                     "batch_sizes": list(config.batch_sizes), "channels_last": config.channels_last,
                     "streams": list(config.streams), "micro_batches": list(config.micro_batches),
                     "warmup": config.warmup, "iters": config.iters, "max_time_s": config.max_time_s,
                     "rounds": config.rounds,
                     "threads": threads, "fp32_math": job.spec.fp32_math, "num_images": int(images.shape[0]),
                     "cache_dir": config.cache_dir, "peers": config.peers,
                     "calibration": list(config.calibration) or "bundled samples" if "int8" in config.dtypes else None},
        "criteria": {d: c.to_json() for d, c in criteria.items()},
        "baseline": "eager fp32 (plain timm, contiguous) on the same device, same run",
        "configurations": records,
        "rows": rows,
        "peer_comparison": compare_with_peers(rows),
    }
