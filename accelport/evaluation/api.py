"""``accelport eval``: a whole dataset through the CPU fp32 reference and the target, in one or many processes.

Every process loads the model, lists the dataset and agrees with the others on what the resume journals
already hold; it then evaluates its strided share of the rest. Rank 0 gathers the per-image records, sorts
them into dataset order and writes eval.json, eval.md and eval_hist.png.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..allocator import allocator_kind, allocator_state
from ..atomic import json_safe
from ..criteria import Criteria
from ..devices import PINNED_DEVICE_TYPES, caller_torch_state
from ..errors import InputError, UsageError
from ..job.context import JobContext, open_job
from ..job.header import REFERENCE, DocumentHeader, model_record, target_record
from ..job.spec import with_overrides
from ..out_dir_lock import job_scope
from ..resources import check_batch_fits
from ..runners import QUANTIZED_DTYPES, create_runner
from ..runners.base import OPTIONS
from ..runners.quantize import calibration_overlap
from . import distributed as dist_utils
from .aggregate import summarise
from .config import EvalConfig
from .dataset import DatasetListing, list_dataset, make_loader
from .document import SCHEMA_VERSION, EvalDataset, EvalDocument, EvalRun
from .journal import JournalWriter, clear_journals, journal_path, read_journals
from .labels import class_namer
from .loop import (
    PROOF_IMAGES,
    ShardEvaluator,
    ShardResult,
    StageTimes,
    add_nonfinite_weights_check,
    add_structural_proof,
    fp32_twin,
)
from .records import ImageRecord
from .reference_cache import ReferenceCache
from .report import write_outputs

_logger = logging.getLogger(__name__)


@dataclass
class EvalResult:
    """What rank 0 wrote (the other ranks get ``document=None``) and the verdict every rank returns."""

    passed: bool
    document: EvalDocument | None = None
    artifacts: dict[str, Path] = field(default_factory=dict)

    @property
    def data(self) -> dict[str, Any] | None:
        """Exactly what eval.json holds (rank 0; None on the other ranks), as every command's result has it."""
        return json_safe(self.document.to_json()) if self.document is not None else None


def _fingerprint(config: EvalConfig, job: JobContext, listing: DatasetListing, criteria: Criteria) -> dict[str, Any]:
    """What must not change between an interrupted run and its resume (journal.py)."""
    loaded, target = job.loaded, config.target
    return {
        "model": loaded.name, "head": loaded.head, "weights": _weights_identity(loaded, job.spec.seed),
        "target_weights": job.target_model.weights.sha256 if job.separate_target else None,
        "data_config": job.data_config.to_json(), "data": str(listing.root.resolve()),
        "labels": listing.labels.to_json(), "device_type": job.device.type, "runtime": target.runtime,
        "dtype": target.dtype, "channels_last": target.channels_last, "fp32_math": job.spec.fp32_math,
        "batch_size": target.batch_size,  # options: e.g. calibration; a neutral value (--int8-remainder fp32) as none
        "options": json.loads(json.dumps({k: v for k, v in target.options if v not in OPTIONS[k].neutral})),
        "elem_rtol": criteria.elem_rtol, "tie_rel_l2": criteria.max_rel_l2,  # they decide the records' flags
    }


def _weights_identity(loaded: Any, seed: int) -> str:
    if loaded.weights.sha256:
        return loaded.weights.sha256
    return f"random-init seed {seed} torch {torch.__version__}"


def _check_same_job(ctx: dist_utils.DistContext, fingerprint: dict[str, Any], listing: DatasetListing) -> None:
    """Every rank must list the same images with the same settings, or the strided shards would not fit together."""
    if not ctx.enabled:
        return
    payload = json.dumps([fingerprint, [(it.key, it.label) for it in listing.items]], sort_keys=True)
    gathered = dist_utils.all_gather(ctx, (hashlib.sha256(payload.encode("utf-8")).hexdigest(),
                                           allocator_kind(allocator_state())))
    digests, allocators = [g[0] for g in gathered], [g[1] for g in gathered]
    if ctx.is_main and (other := [rank for rank, kind in enumerate(allocators) if kind != allocators[0]]):
        # the figures do not depend on it, the throughput does (allocator.py): said, not refused
        _logger.warning("rank(s) %s run with another allocator than rank 0 (%s against %s): eval's throughput mixes "
                        "them; set ACCELPORT_ALLOCATOR alike on every node", other,
                        ", ".join(sorted({allocators[r] for r in other})), allocators[0])
    odd = [rank for rank, digest in enumerate(digests) if digest != digests[0]]
    if odd:
        raise UsageError(f"--data {listing.root}: rank(s) {odd} see other images, labels or settings than rank 0 "
                         f"(rank {ctx.rank} sees {len(listing.items)} images); every node needs the same dataset "
                         "at the same path and the same command line")


def _done_before(config: EvalConfig, ctx: dist_utils.DistContext, out_dir: Path, fingerprint: dict[str, Any],
                 listing: DatasetListing) -> tuple[set[str], list[ImageRecord]]:
    """Keys already in the journals (agreed by all ranks) and the records this rank reports for them.

    Each rank reads the journals it can see (all of them on a shared file system, its node's otherwise); a
    record seen by several ranks is reported by the lowest of them, so rank 0 receives it exactly once.
    """
    if not config.resume:
        if ctx.local_rank == 0:
            clear_journals(out_dir)
        dist_utils.barrier(ctx)
        return set(), []
    files = {it.key: ReferenceCache.image_key(it.path) for it in listing.items}  # a replaced image is redone
    local = read_journals(out_dir, fingerprint, files, warn=ctx.local_rank == 0)
    owner: dict[str, int] = {}
    for rank, keys in enumerate(dist_utils.all_gather(ctx, sorted(local))):
        for key in keys:
            owner.setdefault(key, rank)
    owned = [r for k, r in local.items() if owner[k] == ctx.rank]
    if ctx.is_main:
        _logger.info("--resume: %d of %d images already evaluated", len(owner), len(listing.items))
    return set(owner), owned


def _progress_bar(ctx: dist_utils.DistContext, total: int, enabled: bool):
    if not ctx.is_main or not enabled:
        return None
    from ..progress import progress_bar

    desc = "eval" if not ctx.enabled else f"eval (rank 0 of {ctx.world_size}, its share)"
    return progress_bar(total, desc, "img")  # a bar on a terminal; in a log file, a log line every 30 s


@caller_torch_state()
@job_scope
def evaluate(config: EvalConfig | None = None, on_batch: Callable[[int], None] | None = None,
             **overrides: Any) -> EvalResult:
    """Run the evaluation; ``overrides`` are flat flag names as for every command (``evaluate(data="val/",
    dtype="bf16")``); ``on_batch(n)`` is called after the n-th batch is journaled (tests interrupt there)."""
    if config is None:
        if "data" not in overrides:
            raise UsageError("evaluate: data= (the dataset folder) is required")
        config = EvalConfig(data=overrides.pop("data"))
    config = with_overrides(config, **overrides)
    config.validate()
    ctx, device = dist_utils.init_distributed(config.spec.device, config.dist_timeout_s)
    try:
        result = _evaluate(config, ctx, device, on_batch)
        # every rank done before any tears its process group down: rank 0 writes the files after the last gather,
        # and a peer that had already closed its gloo connections made rank 0 abort at exit ("terminate called
        # without an active exception", exit -6) in about one run in ten, after its files were written
        dist_utils.barrier(ctx)
        return result
    finally:
        dist_utils.shutdown(ctx)


def _evaluate(config: EvalConfig, ctx: dist_utils.DistContext, device: torch.device,
              on_batch: Callable[[int], None] | None) -> EvalResult:
    """Open the job, list the dataset, agree on what is left, evaluate this rank's share, gather, write."""
    job = open_job(config.spec, device=device, with_images=False)  # the dataset is eval's input
    if job.loaded.num_classes == 0:
        raise UsageError(f"--model {config.spec.model}: has no classifier head; eval compares class predictions")
    check_batch_fits(config.target.batch_size, job.input_size, model=job.loaded.model)  # workers pad to it
    listing = list_dataset(config.data, config.labels, job.loaded.model, job.loaded.num_classes)
    out_dir = Path(config.spec.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    criteria = job.criteria_for(config.target.dtype)
    fingerprint = _fingerprint(config, job, listing, criteria)
    _check_same_job(ctx, fingerprint, listing)
    done_keys, done_records = _done_before(config, ctx, out_dir, fingerprint, listing)
    items = dist_utils.shard([it for it in listing.items if it.key not in done_keys], ctx)
    overlap = None  # int8 judged on its own calibration images? said before the work, by the main process
    if config.target.dtype in QUANTIZED_DTYPES and ctx.is_main:
        overlap = calibration_overlap(config.target.option("calibration"), [it.path for it in listing.items], "--data")
    journaled = dist_utils.shard([it for it in listing.items if it.key in done_keys], ctx)  # proof material
    shard, runner_settings, cache = _evaluate_share(config, job, ctx, items, criteria, fingerprint, on_batch,
                                                    journaled[:PROOF_IMAGES])
    if overlap is not None:
        runner_settings["calibration_overlap"] = overlap
    shard.records.extend(done_records)
    gathered = dist_utils.gather_to_main(ctx, (shard, cache.to_json() if cache else None))
    result = EvalResult(passed=False)
    if ctx.is_main:
        result = _write(config, job, ctx, gathered, listing, len(done_keys), runner_settings, criteria)
    result.passed = dist_utils.broadcast_from_main(ctx, result.passed)
    return result


def _evaluate_share(config: EvalConfig, job: JobContext, ctx: dist_utils.DistContext, items: list[Any],
                    criteria: Criteria, fingerprint: dict[str, Any], on_batch: Callable[[int], None] | None,
                    journaled: list[Any]) -> tuple[ShardResult, dict[str, Any], Any]:
    """This rank's images through the reference and the target, journaled batch by batch (``journaled``: images
    taken from the resume journal, for a non-fp32 target's structural proof when this run has too few)."""
    cache = None
    if config.reference_cache:
        cache = ReferenceCache(config.reference_cache, {k: fingerprint[k] for k in ("model", "head", "weights",
                                                                                   "data_config")})
    target = config.target
    loader = make_loader(items, job.transform, target.batch_size, tuple(job.input_size), config.workers,
                         job.device.type in PINNED_DEVICE_TYPES)
    progress = _progress_bar(ctx, len(items), config.progress)
    with create_runner("eager", job.loaded.model, torch.device("cpu"), "fp32") as reference_runner, \
            create_runner(target.runtime, job.target_model.model, job.device, target.dtype, target.channels_last,
                          **target.runner_options()) as target_runner, \
            JournalWriter(journal_path(Path(job.spec.out_dir), ctx.rank), fingerprint) as journal:
        proof = fp32_twin(target_runner, criteria.precision)
        rounded = job.rounded_reference() if proof is not None else None
        evaluator = ShardEvaluator(items, reference_runner, target_runner, job.loaded.num_classes, criteria,
                                   cache, journal, job.spec.skip_bad_images, proof=proof,
                                   fp32_math=job.spec.fp32_math,
                                   proof_reference=create_runner("eager", rounded.model, torch.device("cpu"), "fp32")
                                   if rounded else None)
        try:
            resumed = None
            if journaled and evaluator.proof is not None:
                resumed = (make_loader(journaled, job.transform, target.batch_size, tuple(job.input_size), 0,
                                       False), journaled)
            shard = evaluator.run(loader, progress, on_batch, resumed)
        finally:
            if progress is not None:
                progress.close()
        weights = {"target_weights": job.target_model.weights.sha256} if job.separate_target else {}
        return shard, target_runner.describe() | weights, cache


def _write(config: EvalConfig, job: JobContext, ctx: dist_utils.DistContext, gathered: Any,
           listing: DatasetListing, resumed: int, runner_settings: dict[str, Any], criteria: Criteria) -> EvalResult:
    """Rank 0: the shards merged into dataset order, the typed document built from them, written."""
    shards: list[ShardResult] = [g[0] for g in gathered]
    records, skipped = _merged(shards, listing)
    figures = summarise(records, criteria, config.max_disagreement, config.max_accuracy_drop, config.worst,
                        class_namer(job.loaded.model))
    add_nonfinite_weights_check(figures, {"reference": job.loaded.model}
                                | ({"target": job.target_model.model} if job.separate_target else {}))
    add_structural_proof(figures, runner_settings, shards, criteria.precision,  # not strict fp32: the same in fp32
                         job.rounded_reference() if criteria.precision != "fp32" else None)
    header = DocumentHeader.of(SCHEMA_VERSION, job, model=model_record(job), reference=REFERENCE,
                               target=target_record(job, runner_settings, criteria.precision))
    limits = {"max_disagreement": config.max_disagreement, "max_accuracy_drop": config.max_accuracy_drop}
    doc = EvalDocument.of(header, job.loaded.weights, EvalDataset.of(listing, len(records), skipped),
                          _run_record(config, ctx, shards, [g[1] for g in gathered if g[1]], resumed),
                          criteria.to_json() | limits,
                          StageTimes.merged([s.times for s in shards]).to_json(config.workers, ctx.world_size),
                          figures)
    artifacts = write_outputs(Path(job.spec.out_dir), doc, [r.cosine for r in records], [r.rel_l2 for r in records])
    return EvalResult(passed=doc.passed, document=doc, artifacts=artifacts)


def _merged(shards: list[ShardResult], listing: DatasetListing) -> tuple[list[ImageRecord], list[dict[str, str]]]:
    """Every rank's records and skipped files in dataset order; InputError when no image could be read."""
    position = {it.key: it.position for it in listing.items}
    records = sorted((r for s in shards for r in s.records), key=lambda r: position[r.key])
    skipped = sorted((x for s in shards for x in s.skipped), key=lambda x: position[x["path"]])
    if not records:
        raise InputError(f"--data {listing.root}: no readable images left after skipping "
                         f"{len(skipped)} bad file(s)")
    return records, skipped


def _run_record(config: EvalConfig, ctx: dist_utils.DistContext, shards: list[ShardResult],
                caches: list[dict[str, Any]], resumed: int) -> EvalRun:
    """How the evaluation ran; the reference cache's hits and misses summed over the ranks."""
    return EvalRun(**ctx.to_json(), batch_size=config.target.batch_size, workers=config.workers,
                   resumed_images=resumed, evaluated_now=sum(len(s.records) for s in shards) - resumed,
                   reference_cache=None if not caches else {"dir": caches[0]["dir"],
                                                            "hits": sum(c["hits"] for c in caches),
                                                            "misses": sum(c["misses"] for c in caches)})
