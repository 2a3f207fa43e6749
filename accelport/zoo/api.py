"""``run_zoo``: every model x runtime x dtype, each cell in its own child, resumable, spread over torchrun ranks.

Order of work: validate everything the user gave (models, patterns, runtimes, dtypes, out-dir, journal) before
any child starts; rank 0 prepares the journal and tells every rank which cells are left; the ranks take cells
from a shared counter until none is left; rank 0 merges the rows in plan order (models as given, then
runtimes, then dtypes) and writes zoo.json, zoo.csv, zoo.md and zoo.png atomically.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, cast

from ..allocator import allocator_kind, allocator_state, configure_allocator
from ..atomic import json_safe
from ..devices import caller_torch_state
from ..errors import EXIT_PARITY_FAILED, EXIT_PASSED, EXIT_USER_ERROR, UsageError
from ..evaluation.distributed import DistContext, barrier, broadcast_from_main, init_distributed, shutdown
from ..job.spec import with_overrides
from ..out_dir_lock import hold_out_dir, job_scope
from .cell import EXPLAINED, Cell, run_cell
from .config import DEFAULT_CPU_MEMORY_GB, ZooConfig, child_environment, resolve_models
from .document import ZooDocument, ZooRow
from .journal import JOURNAL_NAME, append_row, read_journal, start_journal
from .plot import write_heatmap
from .queue import CellQueue
from .report import write_outputs

_logger = logging.getLogger(__name__)

DIST_TIMEOUT_S = 7 * 24 * 3600.0  # rank 0 waits for the slowest rank's last cell; torchrun ends a failed job


@dataclass
class ZooResult:
    """The merged document (rank 0; None elsewhere), the files written, and the sweep's exit code."""

    document: ZooDocument | None
    exit_code: int
    artifacts: dict[str, Path] = field(default_factory=dict)

    @property
    def data(self) -> dict[str, Any] | None:
        """Exactly what zoo.json holds (rank 0; None on the other ranks)."""
        return json_safe(self.document.to_json()) if self.document is not None else None


def plan_cells(models: list[str], config: ZooConfig) -> list[Cell]:
    return [Cell(m, r, d) for m in models for r in config.runtimes for d in config.dtypes]


def journal_settings(config: ZooConfig, device: str) -> dict[str, Any]:
    """What decides a row's result besides its cell: a journal written with other values cannot be resumed."""
    spec = config.spec
    return {"device": device, "features": spec.features, "images": [str(Path(p).resolve()) for p in spec.images],
            "batch_size": config.batch_size, "warmup": config.warmup, "iters": config.iters,
            "timeout_s": config.timeout_s, "memory_gb": config.memory_gb, "seed": spec.seed,
            "require_pretrained": spec.require_pretrained,
            "allocator": allocator_kind(allocator_state()),  # it moves eager's latency, and so every speed-up
            # int8 cells' calibration images; absent for the bundled samples (journals from before int8 resume)
            **({"calibration": [str(Path(p).resolve()) for p in config.calibration]} if config.calibration else {})}


@caller_torch_state()
@job_scope
def run_zoo(config: ZooConfig | None = None, **overrides: Any) -> ZooResult:
    """Run the sweep; under torchrun every rank calls this and gets the same exit code."""
    config = with_overrides(config or ZooConfig(), **overrides)
    config.validate()
    configure_allocator()  # as each cell's child process will (same environment): recorded and resumed with it
    models = resolve_models(config)
    cells = plan_cells(models, config)
    ctx, device = init_distributed(config.spec.device, DIST_TIMEOUT_S)
    if config.memory_gb is None:
        config = replace(config, memory_gb=DEFAULT_CPU_MEMORY_GB if device.type == "cpu" else 0.0)
    try:
        hold_out_dir(config.spec.out_dir)  # the journal is appended from the first cell on
        journal = Path(config.spec.out_dir) / JOURNAL_NAME
        settings = journal_settings(config, str(device))
        done = _prepare_journal(ctx, journal, settings, config.resume)
        pending = [cell for cell in cells if cell.key not in done]
        _logger.info("%d model(s) x %d runtime(s) x %d dtype(s): %d cell(s), %d already in the journal, on %s",
                     len(models), len(config.runtimes), len(config.dtypes), len(cells), len(cells) - len(pending),
                     device)
        rows = _run_pending(ctx, pending, config, str(device), journal)
        result = ZooResult(None, EXIT_PASSED)
        if ctx.is_main:
            by_key = {row.key: row for row in map(ZooRow.from_json, [*done.values(), *rows])}  # journal, then new
            document = ZooDocument.build(config, models, [by_key[c.key] for c in cells], str(device), ctx.world_size)
            artifacts = _write(document, Path(config.spec.out_dir), config.plot)
            result = ZooResult(document, _exit_code(document), artifacts)
        result.exit_code = broadcast_from_main(ctx, result.exit_code)
        barrier(ctx)
        return result
    finally:
        shutdown(ctx)


def _exit_code(document: ZooDocument) -> int:
    """0 every cell passed or was unsupported, 1 one failed, crashed or timed out; 2 when every cell was refused
    (a flag no cell could take, such as a batch too large for memory): nothing was measured, which is no pass."""
    if document.rows and all(row.status == "unsupported" for row in document.rows):
        first = document.rows[0]
        _logger.error("no cell ran: every one was refused (%s %s/%s: %s)", first.model, first.runtime, first.dtype,
                      first.reason)
        return EXIT_USER_ERROR
    return EXIT_PASSED if all(row.status in EXPLAINED for row in document.rows) else EXIT_PARITY_FAILED


def _write(document: ZooDocument, out_dir: Path, plot: bool) -> dict[str, Path]:
    """zoo.json, zoo.csv, zoo.md and (``plot``, matplotlib permitting) zoo.png as one atomic set."""
    artifacts = write_outputs(document, out_dir, (lambda path: write_heatmap(document, path)) if plot else None)
    if "plot" in artifacts:
        artifacts["heatmap"] = artifacts.pop("plot")
    return artifacts


def _prepare_journal(ctx: DistContext, journal: Path, settings: dict[str, Any],
                     resume: bool) -> dict[str, dict[str, Any]]:
    """Rank 0 reads (with --resume) and rewrites the journal; every rank gets the finished rows, or the error."""
    outcome: tuple[str, Any]
    if ctx.is_main:
        try:
            done = read_journal(journal, settings) if resume and journal.exists() else {}
            if resume and not journal.exists():
                _logger.warning("--resume: no journal in %s yet; starting a new sweep", journal.parent)
            start_journal(journal, settings, list(done.values()))
            outcome = ("rows", done)
        except UsageError as exc:
            outcome = ("error", str(exc))
    else:
        outcome = ("rows", {})
    kind, value = broadcast_from_main(ctx, outcome)
    if kind == "error":
        raise UsageError(value)
    return cast("dict[str, dict[str, Any]]", value)


def _run_pending(ctx: DistContext, pending: list[Cell], config: ZooConfig, device: str,
                 journal: Path) -> list[dict[str, Any]]:
    """Take cells until none is left; rank 0 returns every new row (all ranks'), the others an empty list."""
    queue = CellQueue(ctx, len(pending))
    env = child_environment(config)
    progress = _progress(len(pending), config.progress and ctx.is_main)
    try:
        while (index := queue.take()) is not None:
            cell = pending[index]
            if progress is not None:
                progress.set_postfix_str(f"{cell.model} {cell.runtime} {cell.dtype}", refresh=True)
            row = run_cell(cell, config, device, env)
            append_row(journal, row)
            finished = queue.publish(index, row)
            if progress is not None:
                progress.update(finished - progress.n)
        return queue.collect() if ctx.is_main else []
    finally:
        if progress is not None:
            progress.close()


def _progress(total: int, wanted: bool) -> Any:
    """A tqdm bar with ETA on an interactive stderr; nothing when stderr is a file or a pipe (CI logs)."""
    if not wanted or not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc="zoo", unit="cell", dynamic_ncols=True)
