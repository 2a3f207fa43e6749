"""The zoo's resume journal: one JSON line per finished cell, appended and fsynced as soon as the cell ends.

``zoo.journal.jsonl`` in ``--out-dir``; the first line is a header with the sweep's settings (what decides a
row's result: device, images, head, limits...). Every process of a torchrun sweep appends to the same file
with ``O_APPEND`` and one ``write`` per row, so rows never interleave. ``--resume`` keeps every row of a
journal written with the same settings and runs only the other cells; a journal with other settings, or a
line that is not a row, is a UsageError naming the file (exit 2). The one exception is a last line without
its newline: a write cut off by a kill, dropped with a warning (its cell simply runs again).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .. import journal
from ..errors import UsageError
from .cell import STATUSES

_logger = logging.getLogger(__name__)

JOURNAL_NAME = "zoo.journal.jsonl"
JOURNAL_KIND = "accelport-zoo-journal"
JOURNAL_VERSION = 1
ROW_KEYS = ("model", "runtime", "dtype", "status")


def start_journal(path: Path, settings: dict[str, Any], rows: Iterable[dict[str, Any]] = ()) -> None:
    """A journal of the header and ``rows``, replacing the file atomically: no --resume means start over
    (no rows); a resumed sweep rewrites the rows it kept, which drops a line cut off by a kill."""
    journal.start(path, {"journal": JOURNAL_KIND, "version": JOURNAL_VERSION,
                         "settings": journal.canonical(settings)}, rows)


def read_journal(path: Path, settings: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Finished rows by cell key ("model|runtime|dtype"); the journal must have been written with ``settings``."""
    try:
        lines = journal.read_lines(path, errors="replace")
    except OSError as exc:
        raise UsageError(f"--resume: journal {path} cannot be read ({exc.strerror or exc})") from None
    if lines and lines[-1].torn:
        _logger.warning("%s: its last line was cut off by a kill while being written; that cell runs again", path)
        lines = lines[:-1]
    header = lines[0].value if lines else None
    if not header or header.get("journal") != JOURNAL_KIND or header.get("version") != JOURNAL_VERSION:
        raise UsageError(f"--resume: {path} is not an accelport zoo journal (version {JOURNAL_VERSION}); "
                         "delete it or drop --resume")
    written = header.get("settings", {})
    differs = journal.differing_keys(journal.canonical(settings), written)
    if differs:
        allocator = "" if "allocator" not in differs else (
            f"; allocator {written.get('allocator', 'not recorded: an older accelport wrote it')!r} there, "
            f"{settings.get('allocator')!r} now, which ACCELPORT_ALLOCATOR sets")
        raise UsageError(f"--resume: {path} was written by a sweep with other settings ({', '.join(differs)}"
                         f"{allocator}); use another --out-dir, the same settings, or drop --resume to start over")
    rows: dict[str, dict[str, Any]] = {}
    for line in lines[1:]:
        row = line.value
        if row is None or any(k not in row for k in ROW_KEYS) or row["status"] not in STATUSES:
            raise UsageError(f"--resume: {path} line {line.number} is not a zoo row (corrupt journal); delete the "
                             "file or drop --resume to start over")
        rows[f"{row['model']}|{row['runtime']}|{row['dtype']}"] = row
    return rows


def append_row(path: Path, row: dict[str, Any]) -> None:
    """One row, one ``write`` on an ``O_APPEND`` descriptor, fsynced: safe with several processes appending."""
    journal.append(path, [row])
