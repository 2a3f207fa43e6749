"""bench.json as a typed document (``BenchDocument``), and the sweep on an opened job that produces it (without
its ``pick``, which bench/pick.py adds).

The sweep is shared by ``accelport bench`` and ``run --runtime auto``; it applies no numeric settings and sets no
thread count (the job and the caller did), so running it changes nothing process-wide. bench.md, bench.png and the
``--pick`` text are rendered from the document's attributes (report.py, plot.py), never from a second copy.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..environment import describe_environment
from ..job.header import DocumentHeader, utc_now
from ..proofs import UNSEEN_CHECK_IMAGES, nonfinite_weights, weight_differences
from ..runners import create_runner
from ..runners.cache import library_versions, weights_digest
from .peers import compare_with_peers
from .roofline import add_achieved_flops, model_flops
from .rows import BatchPick, BenchRow, PeerComparison
from .sweep import SweepSettings, add_ratios, plan_configurations, reliability_summary, sweep

if TYPE_CHECKING:
    from ..job.context import JobContext
    from ..models import LoadedModel
    from .config import BenchConfig
    from .journal import JournalState, JournalWriter

SCHEMA_VERSION = 1
BASELINE_TEXT = "eager fp32 (plain timm, contiguous) on the same device, same run"


_ABSENT: Any = object()  # a key older documents do not have (None is a value of its own there)


@dataclass(frozen=True)
class BenchSettings:
    """The sweep's settings as bench.json records them (``settings``)."""

    runtimes: list[str]
    dtypes: list[str]
    batch_sizes: list[int]
    channels_last: str
    streams: list[int]
    micro_batches: list[int]
    warmup: int
    iters: int
    max_time_s: float
    rounds: int | None  # None: absent (documents written before timing rounds)
    threads: int
    fp32_math: str
    num_images: int
    cache_dir: str | None
    peers: bool | None = None  # None: absent (documents written before peer rows)
    # int8 calibration images ("bundled samples" by default; None without int8); _ABSENT in documents before int8
    calibration: list[str] | str | None = field(default=_ABSENT)
    calibration_overlap: int = field(default=_ABSENT)  # int8 only: calibration images that are also judged
    # thread counts measured besides ``threads`` (accelport's single-stream rows); _ABSENT in earlier documents
    swept_threads: list[int] = field(default=_ABSENT)

    @classmethod
    def of(cls, config: BenchConfig, threads: int, fp32_math: str, num_images: int,
           swept_threads: tuple[int, ...] = ()) -> BenchSettings:
        calibration = (list(config.calibration) or "bundled samples") if "int8" in config.dtypes else None
        return cls(list(config.runtimes), list(config.dtypes), list(config.batch_sizes), config.channels_last,
                   list(config.streams), list(config.micro_batches), config.warmup, config.iters, config.max_time_s,
                   config.rounds, threads, fp32_math, num_images, config.cache_dir, config.peers, calibration,
                   swept_threads=list(swept_threads))

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BenchSettings:
        return cls(**{"rounds": None} | data)

    def to_json(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not _ABSENT}
        return {k: v for k, v in data.items() if v is not None or k not in ("rounds", "peers")}


@dataclass(frozen=True)
class BenchDocument:
    """bench.json: the shared header, the sweep's settings and criteria, its rows, the peer comparison, the pick.

    Sections that are None are absent from the JSON (documents written by older versions lack them). A document
    written by this version is re-read exactly, key order included (``from_json(d).to_json() == d``); an older one
    with the same keys and values.
    """

    header: DocumentHeader
    device: str
    numeric_settings: dict[str, Any]
    settings: BenchSettings
    criteria: dict[str, dict[str, Any]]
    baseline: str
    configurations: list[dict[str, Any]]  # the runners' own settings (describe()): open-ended per runtime
    rows: tuple[BenchRow, ...]
    resumed_points: int | None = None
    timing_reliability: dict[str, Any] | None = None
    peer_comparison: tuple[PeerComparison, ...] | None = None  # () with --no-peers, None: absent
    pick: tuple[BatchPick, ...] | None = None  # added by bench/pick.py

    @property
    def model(self) -> dict[str, Any]:
        return self.header.model

    @property
    def environment(self) -> dict[str, Any]:
        return self.header.environment

    @property
    def rounds(self) -> int:
        return self.settings.rounds or 1

    def rows_json(self) -> list[dict[str, Any]]:
        return [row.to_json() for row in self.rows]

    def with_picks(self, picks: list[dict[str, Any]]) -> BenchDocument:
        return replace(self, pick=tuple(BatchPick.from_json(p) for p in picks))

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BenchDocument:
        comparison, pick = data.get("peer_comparison"), data.get("pick")
        return cls(
            DocumentHeader.from_json(data), data["device"], data["numeric_settings"],
            BenchSettings.from_json(data["settings"]), data["criteria"], data["baseline"], data["configurations"],
            tuple(BenchRow.from_json(r) for r in data["rows"]), data.get("resumed_points"),
            data.get("timing_reliability"),
            None if comparison is None else tuple(PeerComparison.from_json(c) for c in comparison),
            None if pick is None else tuple(BatchPick.from_json(p) for p in pick))

    def to_json(self) -> dict[str, Any]:
        data = self.header.to_json()
        if self.resumed_points is not None:
            data["resumed_points"] = self.resumed_points
        if self.timing_reliability is not None:
            data["timing_reliability"] = self.timing_reliability
        data |= {"device": self.device, "numeric_settings": self.numeric_settings, "settings": self.settings.to_json(),
                 "criteria": self.criteria, "baseline": self.baseline, "configurations": self.configurations,
                 "rows": self.rows_json()}
        if self.peer_comparison is not None:
            data["peer_comparison"] = [c.to_json() for c in self.peer_comparison]
        if self.pick is not None:
            data["pick"] = [p.to_json() for p in self.pick]
        return data

    def to_markdown(self) -> str:
        from .report import render_markdown

        return render_markdown(self)


def reference_outputs(model: torch.nn.Module, images: torch.Tensor) -> np.ndarray:
    """CPU eager fp32, one image at a time: the reference every configuration is judged against."""
    with create_runner("eager", model, torch.device("cpu"), "fp32") as runner:
        return torch.cat([runner.infer(images[i : i + 1]) for i in range(images.shape[0])]).numpy()


def bench_environment(device: torch.device, threads: int) -> dict[str, Any]:
    return {**describe_environment(device), **library_versions("onnxruntime", "openvino", "onnx"),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "threads": threads}


def bench_model_record(loaded: LoadedModel, input_size: list[int], flops_per_image: int | None,
                       data_config: dict[str, Any]) -> dict[str, Any]:
    """bench.json's ``model``; ``data_config`` last (added later): ``run --runtime auto`` takes a pick only for the
    same preprocessing (--test-size changes the input size and crop)."""
    return {"name": loaded.name, "head": loaded.head, "num_params": loaded.num_params, "input_size": input_size,
            "flops_per_image": flops_per_image,
            "weights_source": loaded.weights.source, "weights_sha256": loaded.weights.sha256,
            "pretrained_used": loaded.weights.pretrained_used, "state_digest": weights_digest(loaded.model),
            "data_config": data_config}


def sweep_document(job: JobContext, config: BenchConfig, images: torch.Tensor, threads: int,
                   journal: JournalWriter | None = None, resumed: JournalState | None = None) -> BenchDocument:
    """Every configuration of ``config`` on the job's model and these preprocessed images, judged and timed."""
    started = time.time()
    criteria = {d: job.criteria_for(d) for d in (*config.dtypes, "fp32")}
    reference = reference_outputs(job.loaded.model, images)
    differences = weight_differences(job, images[:UNSEEN_CHECK_IMAGES])  # said before minutes of sweeping
    swept_threads = tuple(t for t in config.thread_counts() if t != threads)
    configurations = plan_configurations(config.runtimes, config.dtypes, config.channels_last, config.streams,
                                         config.micro_batches, peers=config.peers, threads=swept_threads)
    settings = SweepSettings(config.warmup, config.iters, config.max_time_s, threads, config.cache_dir, config.progress,
                             config.rounds, config.calibration, job.spec.fp32_math,
                             prove_half_precision=job.separate_target,
                             nonfinite_weights=nonfinite_weights({"reference": job.loaded.model}
                                                                 | ({"target": job.target_model.model}
                                                                    if job.separate_target else {})))
    # every row runs the port under test (--target-weights, else the reference's weights), judged against the
    # reference: a broken conversion fails each runtime's parity, eager's too
    rounded = job.rounded_reference() if any(d != "fp32" for d in config.dtypes) else None
    records, rows = sweep(job.target_model.model, images, reference, job.device, configurations, config.batch_sizes,
                          criteria, job.is_classifier, settings, journal, resumed,
                          (rounded, reference_outputs(rounded.model, images)) if rounded else None)
    add_ratios(rows)
    flops_per_image = model_flops(job.loaded.model, [1, *job.input_size])
    add_achieved_flops(rows, flops_per_image)
    model = bench_model_record(job.loaded, job.input_size, flops_per_image, job.data_config.to_json())
    if job.separate_target:
        model["target_weights"] = {"path": job.target_model.weights.path, "sha256": job.target_model.weights.sha256,
                                   "state_digest": weights_digest(job.target_model.model),
                                   "stored_dtypes": list(job.target_model.weights.stored_dtypes or ()),
                                   **(differences.to_json() if differences else {}),
                                   **({"proof_reference_rounded": rounded.to_json()} if rounded else {})}
    header = DocumentHeader(SCHEMA_VERSION, utc_now(), round(time.time() - started, 3), model,
                            bench_environment(job.device, threads))
    return BenchDocument(
        header=header, resumed_points=resumed.points if resumed else 0,
        timing_reliability=reliability_summary(rows), device=str(job.device),
        numeric_settings=job.numeric.effective,
        settings=BenchSettings.of(config, threads, job.spec.fp32_math, int(images.shape[0]), swept_threads),
        criteria={d: c.to_json() for d, c in criteria.items()}, baseline=BASELINE_TEXT, configurations=records,
        rows=tuple(BenchRow.from_json(row) for row in rows),
        peer_comparison=tuple(PeerComparison.from_json(c) for c in compare_with_peers(rows)))
