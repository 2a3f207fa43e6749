"""The zoo's resume journal: one JSON line per finished cell, appended and fsynced as soon as the cell ends.

``zoo.journal.jsonl`` in ``--out-dir``; the first line is a header with the sweep's settings (what decides a
row's result: device, images, head, limits...). Every process of a torchrun sweep appends to the same file
with ``O_APPEND`` and one ``write`` per row, so rows never interleave. ``--resume`` keeps every row of a
journal written with the same settings and runs only the other cells; a journal with other settings, or a
line that is not a row, is a UsageError naming the file (exit 2). The one exception is a last line without
its newline: a write cut off by a kill, dropped with a warning (its cell simply runs again).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from ..atomic import write_text_atomic
from ..errors import UsageError
from .cell import STATUSES

_logger = logging.getLogger(__name__)

JOURNAL_NAME = "zoo.journal.jsonl"
JOURNAL_KIND = "accelport-zoo-journal"
JOURNAL_VERSION = 1
ROW_KEYS = ("model", "runtime", "dtype", "status")


def _canonical(value: Any) -> Any:
    return json.loads(json.dumps(value, sort_keys=True))


def start_journal(path: Path, settings: dict[str, Any], rows: list[dict[str, Any]] = ()) -> None:
    """A journal of the header and ``rows``, replacing the file atomically: no --resume means start over
    (no rows); a resumed sweep rewrites the rows it kept, which drops a line cut off by a kill."""
    header = {"journal": JOURNAL_KIND, "version": JOURNAL_VERSION, "settings": _canonical(settings)}
    text = "".join(json.dumps(line, allow_nan=True) + "\n" for line in [header, *rows])
    write_text_atomic(path, text)


def read_journal(path: Path, settings: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Finished rows by cell key ("model|runtime|dtype"); the journal must have been written with ``settings``."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"--resume: journal {path} cannot be read ({exc.strerror or exc})") from None
    lines = data.decode("utf-8", "replace").split("\n")
    if lines and lines[-1] and not data.endswith(b"\n"):
        _logger.warning("%s: its last line was cut off by a kill while being written; that cell runs again", path)
        lines = lines[:-1]
    lines = [line for line in lines if line.strip()]
    header = _parse(lines[0]) if lines else None
    if not header or header.get("journal") != JOURNAL_KIND or header.get("version") != JOURNAL_VERSION:
        raise UsageError(f"--resume: {path} is not an accelport zoo journal (version {JOURNAL_VERSION}); "
                         "delete it or drop --resume")
    found = header.get("settings", {})
    differs = sorted(k for k in set(found) | set(_canonical(settings)) if found.get(k) != _canonical(settings).get(k))
    if differs:
        raise UsageError(f"--resume: {path} was written by a sweep with other settings ({', '.join(differs)}); use "
                         "another --out-dir, the same settings, or drop --resume to start over")
    rows: dict[str, dict[str, Any]] = {}
    for number, line in enumerate(lines[1:], 2):
        row = _parse(line)
        if row is None or any(k not in row for k in ROW_KEYS) or row["status"] not in STATUSES:
            raise UsageError(f"--resume: {path} line {number} is not a zoo row (corrupt journal); delete the file "
                             "or drop --resume to start over")
        rows[f"{row['model']}|{row['runtime']}|{row['dtype']}"] = row
    return rows


def append_row(path: Path, row: dict[str, Any]) -> None:
    """One row, one ``write`` on an ``O_APPEND`` descriptor, fsynced: safe with several processes appending."""
    line = (json.dumps(row, allow_nan=True) + "\n").encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


def _parse(line: str) -> dict[str, Any] | None:
    """The JSON object on ``line``; None for anything else (not JSON, or JSON but not an object)."""
    with contextlib.suppress(ValueError):  # json.JSONDecodeError is a ValueError
        value = json.loads(line)
        if isinstance(value, dict):
            return value
    return None
