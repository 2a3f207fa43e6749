"""``accelport bench`` as an API: open the job (model and images once), sweep with a journal, pick, write.

bench.json is the one result object (``schema_version``); bench.md and bench.png are rendered from it.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from ..allocator import allocator_kind, allocator_state
from ..devices import caller_torch_state
from ..job.context import JobContext, open_job
from ..job.result import CommandResult
from ..job.spec import with_overrides
from ..out_dir_lock import job_scope
from ..resources import check_batch_fits
from ..runners.cache import weights_digest
from ..runners.quantize import calibration_overlap
from .config import BenchConfig
from .document import BenchDocument, bench_environment, sweep_document
from .journal import JOURNAL_NAME, JournalWriter, read_journal
from .pick import add_picks
from .threads import intra_op_threads

_logger = logging.getLogger(__name__)

# Spec fields bench has no flag for (always their defaults) or that do not change a figure (where results go).
_NOT_IN_FINGERPRINT = ("out_dir", "images", "skip_bad_images", "cache_dir", "progress", "plot", "resume")


class BenchResult(CommandResult[BenchDocument]):
    """The typed sweep document (``data``: bench.json) and the files written."""


def journal_fingerprint(config: BenchConfig, job: JobContext, images: list[str]) -> dict[str, Any]:
    """Everything that changes a figure of the sweep: a journal is resumed only under the same fingerprint."""
    flat = asdict(config.spec) | {k: v for k, v in asdict(config).items() if k != "spec"}
    settings = {k: v for k, v in flat.items() if k not in _NOT_IN_FINGERPRINT}
    target = {"target_state_digest": weights_digest(job.target_model.model)} if job.separate_target else {}
    return {**settings, "images": images, "state_digest": weights_digest(job.loaded.model), **target,
            "device": str(job.device),
            **{k: v for k, v in bench_environment(job.device, 0).items() if k not in ("threads", "torch_threads")},
            "allocator": allocator_kind(allocator_state())}  # what it does, not how it was set (CLI or API)


@caller_torch_state()
@job_scope
def run_bench(config: BenchConfig | None = None, **overrides: Any) -> BenchResult:
    """Sweep every configuration of ``config``, journaled point by point, and write bench.json/.md/.png."""
    from .report import write_bench_artifacts

    config = with_overrides(config or BenchConfig(), **overrides)
    config.validate()
    job = open_job(config.spec)
    # before minutes of sweeping, as run refuses its --batch-size: the largest fits, or none of them need checking
    check_batch_fits(max(config.batch_sizes), job.input_size, "--batch-sizes", job.loaded.model)
    document = add_picks(_journaled_sweep(job, config), config.batch_sizes)
    return BenchResult(document, write_bench_artifacts(Path(config.spec.out_dir), document, plot=config.plot))


def _journaled_sweep(job: JobContext, config: BenchConfig) -> BenchDocument:
    """The sweep with every finished point journaled: an interrupted sweep goes on with --resume."""
    images = job.image_batch()
    path = Path(config.spec.out_dir) / JOURNAL_NAME
    fingerprint = journal_fingerprint(config, job, [str(p) for p in images.paths])
    resumed = read_journal(path, fingerprint) if config.resume else None
    journal = JournalWriter(path, fingerprint, fresh=not config.resume)
    # int8 judged on its own calibration images? said before the sweep, not after it
    overlap = calibration_overlap(config.calibration, images.paths) if "int8" in config.dtypes else None
    try:
        with intra_op_threads(config.thread_counts()[0]) as threads:
            document = sweep_document(job, config, images.tensor, threads, journal, resumed)
        if overlap is not None:
            document = replace(document, settings=replace(document.settings, calibration_overlap=overlap))
        return document
    except KeyboardInterrupt:
        _logger.warning("interrupted: every finished point is kept in %s; run the same command with --resume to go "
                        "on from them", path)
        raise
    finally:
        journal.close()
