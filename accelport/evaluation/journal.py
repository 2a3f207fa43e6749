"""The resume journal: per-image results appended as JSON lines, flushed and fsynced after every batch.

Each rank writes its own ``eval_journal.rank<R>.jsonl`` in ``--out-dir`` (no two processes append to one
file). The first line is a header holding the run's fingerprint (model, weights, data, labels, target,
batch size, tolerance); ``--resume`` reads every journal it finds there, refuses one written for a different
run, and skips the images already recorded. Floats are written with ``repr`` precision, so figures rebuilt
from a journal equal those of an uninterrupted run. A last line cut short by a crash is ignored.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import IO, Any

from ..errors import UsageError
from .records import ImageRecord

_logger = logging.getLogger(__name__)

JOURNAL_VERSION = 2  # 2: every record carries its image file's identity (path, size, mtime)
JOURNAL_GLOB = "eval_journal*.jsonl"


def journal_path(out_dir: Path, rank: int) -> Path:
    return out_dir / f"eval_journal.rank{rank}.jsonl"


def normalised(fingerprint: dict[str, Any]) -> dict[str, Any]:
    """The fingerprint as it reads back from JSON (tuples become lists), so that comparisons are fair."""
    return json.loads(json.dumps(fingerprint, sort_keys=True))


def clear_journals(out_dir: Path) -> None:
    for path in out_dir.glob(JOURNAL_GLOB):
        path.unlink(missing_ok=True)


class JournalWriter:
    """Appends records to one rank's journal; writes the header when the file is new."""

    def __init__(self, path: Path, fingerprint: dict[str, Any]):
        path.parent.mkdir(parents=True, exist_ok=True)
        new = not path.exists() or path.stat().st_size == 0
        self.path = path
        self._fh: IO[str] = open(path, "a", encoding="utf-8")  # noqa: SIM115 (closed in close())
        if new:
            self._write([{"journal": JOURNAL_VERSION, "fingerprint": normalised(fingerprint)}])
        elif not _ends_with_newline(path):
            self._fh.write("\n")  # close a line cut short by a crash, so it cannot swallow the next record

    def _write(self, rows: list[dict[str, Any]]) -> None:
        self._fh.write("".join(json.dumps(row, allow_nan=True) + "\n" for row in rows))
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def append(self, records: list[ImageRecord], files: list[str]) -> None:
        """``files``: each record's image identity (``ReferenceCache.image_key``), checked again on resume."""
        if records:
            self._write([{**r.to_json(), "file": f} for r, f in zip(records, files, strict=True)])

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> JournalWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _differences(expected: dict[str, Any], found: dict[str, Any]) -> list[str]:
    return sorted(k for k in set(expected) | set(found) if expected.get(k) != found.get(k))


def read_journals(out_dir: Path, fingerprint: dict[str, Any], files: dict[str, str]) -> dict[str, ImageRecord]:
    """The records in the journals of ``out_dir`` whose image is still the same file (``files``: key -> identity).

    A journal of a different run, or one that is not a journal (random bytes, a foreign line), is a UsageError
    naming it; a record of an image replaced since is dropped, so that image is evaluated again.
    """
    expected = normalised(fingerprint)
    done: dict[str, ImageRecord] = {}
    for path in sorted(out_dir.glob(JOURNAL_GLOB)):
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError:
            raise UsageError(f"--resume: {path} is not an accelport eval journal (not text); delete it or drop "
                             "--resume") from None
        if not lines:
            continue
        header = _parse(lines[0])
        if header and isinstance(header.get("journal"), int) and header["journal"] != JOURNAL_VERSION:
            raise UsageError(f"--resume: {path} was written by another accelport version (journal "
                             f"{header['journal']}, this one reads {JOURNAL_VERSION}); drop --resume to start over")
        if not header or header.get("journal") != JOURNAL_VERSION:
            raise UsageError(f"--resume: {path} is not an accelport eval journal; delete it or drop --resume")
        differs = _differences(expected, header.get("fingerprint", {}))
        if differs:
            raise UsageError(f"--resume: {path} was written by a different evaluation (differs in: "
                             f"{', '.join(differs)}); use another --out-dir or drop --resume to start over")
        for number, line in enumerate(lines[1:], 2):
            row = _parse(line)
            if row is None:
                _logger.warning("%s line %d: incomplete record ignored (the run was cut off while writing it)",
                                path, number)
                continue
            file = row.pop("file", None)
            try:
                record = ImageRecord.from_json(row)
            except (TypeError, ValueError) as exc:
                raise UsageError(f"--resume: {path} line {number} is not an image record ({exc}); delete the "
                                 "journal or drop --resume") from None
            if files.get(record.key) == file:
                done[record.key] = record
            elif record.key in files:
                _logger.info("--resume: %s changed since it was evaluated; evaluating it again", record.key)
    return done


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as fh:
        fh.seek(-1, os.SEEK_END)
        return fh.read(1) == b"\n"


def _parse(line: str) -> dict[str, Any] | None:
    try:
        value = json.loads(line)
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None
