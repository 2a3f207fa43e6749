"""The resume journal: per-image results appended as JSON lines, flushed and fsynced after every batch.

Each rank writes its own ``eval_journal.rank<R>.jsonl`` in ``--out-dir`` (no two processes append to one
file). The first line is a header holding the run's fingerprint (model, weights, data, labels, target,
batch size, tolerance); ``--resume`` reads every journal it finds there, refuses one written for a different
run, and skips the images already recorded. Floats are written with ``repr`` precision, so figures rebuilt
from a journal equal those of an uninterrupted run. A last line cut short by a crash is ignored.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

from .. import journal
from ..errors import UsageError
from .records import ImageRecord

_logger = logging.getLogger(__name__)

JOURNAL_VERSION = 2  # 2: every record carries its image file's identity (path, size, mtime)
JOURNAL_GLOB = "eval_journal*.jsonl"
# Record fields added since journal version 2: a record without them was written by an older accelport, which did
# not look (an all-zero output would read as "not zero"), so its image is evaluated again rather than miscounted.
LATER_FIELDS = ("zero_reference", "zero_target")
_OLDER_RECORD_FIELDS = {field.name for field in dataclasses.fields(ImageRecord)} - set(LATER_FIELDS)


def journal_path(out_dir: Path, rank: int) -> Path:
    return out_dir / f"eval_journal.rank{rank}.jsonl"


def normalised(fingerprint: dict[str, Any]) -> dict[str, Any]:
    """The fingerprint as it reads back from JSON (tuples become lists), so that comparisons are fair."""
    return journal.canonical(fingerprint)


def clear_journals(out_dir: Path) -> None:
    for path in out_dir.glob(JOURNAL_GLOB):
        path.unlink(missing_ok=True)


class JournalWriter(journal.JournalWriter):
    """Appends records to one rank's journal; writes the header when the file is new."""

    def __init__(self, path: Path, fingerprint: dict[str, Any]):
        super().__init__(path, {"journal": JOURNAL_VERSION, "fingerprint": normalised(fingerprint)})

    def append(self, records: list[ImageRecord], files: list[str]) -> None:
        """``files``: each record's image identity (``ReferenceCache.image_key``), checked again on resume."""
        self.write([{**r.to_json(), "file": f} for r, f in zip(records, files, strict=True)])


def read_journals(out_dir: Path, fingerprint: dict[str, Any], files: dict[str, str], *,
                  warn: bool = True) -> dict[str, ImageRecord]:
    """The records in the journals of ``out_dir`` whose image is still the same file (``files``: key -> identity).

    A journal of a different run, or one that is not a journal (random bytes, a foreign line), is a UsageError
    naming it; a record of an image replaced since is dropped, so that image is evaluated again. ``warn`` False
    (every torchrun rank but one per node) logs what it finds at debug level: the reader on rank 0 says it once.
    """
    expected = normalised(fingerprint)
    warning = _logger.warning if warn else _logger.debug  # under torchrun every rank reads them: one rank says it
    done: dict[str, ImageRecord] = {}
    older: dict[str, tuple[Path, set[str]]] = {}  # key -> (journal, fields it lacks) of records from before them
    for path in sorted(out_dir.glob(JOURNAL_GLOB)):
        try:
            lines = journal.read_lines(path)
        except UnicodeDecodeError:
            raise UsageError(f"--resume: {path} is not an accelport eval journal (not text); delete it or drop "
                             "--resume") from None
        if not lines:
            continue
        _check_header(path, lines[0].value, expected)
        for line in lines[1:]:
            if line.value is None and not line.fragment:  # not a record begun and cut short: not a journal line
                raise UsageError(f"--resume: {path} line {line.number} is not an image record; delete the journal "
                                 "or drop --resume")
            if line.value is None:
                warning("%s line %d: incomplete record ignored (the run was cut off while writing it)", path,
                        line.number)
                continue
            row = dict(line.value)
            file = row.pop("file", None)
            if row.keys() >= _OLDER_RECORD_FIELDS and not all(name in row for name in LATER_FIELDS):
                older[str(row["key"])] = (path, {name for name in LATER_FIELDS if name not in row})
                continue
            try:
                record = ImageRecord.from_json(row)
            except (TypeError, ValueError) as exc:
                raise UsageError(f"--resume: {path} line {line.number} is not an image record ({exc}); delete the "
                                 "journal or drop --resume") from None
            if files.get(record.key) == file:
                if record.key in done and done[record.key] != record:  # the last one won, a verdict flipped unsaid
                    raise UsageError(f"--resume: {path} line {line.number} records {record.key} a second time, with "
                                     "other values (the journal was edited or damaged); delete the journal or drop "
                                     "--resume")
                done[record.key] = record
            elif record.key in files:
                _logger.info("--resume: %s changed since it was evaluated; evaluating it again", record.key)
    again: dict[Path, tuple[int, set[str]]] = {}  # per journal: older records not recorded since, fields they lack
    for key, (path, lacking) in older.items():
        if key not in done:
            count, fields = again.get(path, (0, set()))
            again[path] = (count + 1, fields | lacking)
    for path, (count, fields) in sorted(again.items()):
        warning("--resume: %d record(s) of %s were written by an older accelport (without %s); evaluating those "
                "images again", count, path, " and ".join(sorted(fields)))
    return done


def _check_header(path: Path, header: dict[str, Any] | None, expected: dict[str, Any]) -> None:
    """UsageError naming ``path`` unless its header is this version's, written for the same evaluation."""
    if header and isinstance(header.get("journal"), int) and header["journal"] != JOURNAL_VERSION:
        raise UsageError(f"--resume: {path} was written by another accelport version (journal "
                         f"{header['journal']}, this one reads {JOURNAL_VERSION}); drop --resume to start over")
    if not header or header.get("journal") != JOURNAL_VERSION:
        raise UsageError(f"--resume: {path} is not an accelport eval journal; delete it or drop --resume")
    differs = journal.differing_keys(expected, header.get("fingerprint", {}), nested=True)
    if differs:
        raise UsageError(f"--resume: {path} was written by a different evaluation (differs in: "
                         f"{', '.join(differs)}); use another --out-dir or drop --resume to start over")
