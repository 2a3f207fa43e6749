"""bench's journal: every finished point and timing round, one JSON line each, fsynced as it is written.

``<out-dir>/bench_journal.jsonl`` starts with a header holding the sweep's fingerprint (every setting that changes
a figure, the weights' digest, the device, the library versions). An interrupted sweep (Ctrl-C, a time limit, a
crash) keeps every line written so far; ``bench --resume`` reads them back, refuses a journal written for another
sweep (naming what differs) or one that is not a bench journal, and measures only what is missing. Only a last
line cut short by the interruption is dropped.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import journal
from ..errors import UsageError
from .rows import check_row

_logger = logging.getLogger(__name__)

JOURNAL_NAME = "bench_journal.jsonl"
# 2: rows carry parity.zero_target_count; a /1 row without it would read as "no all-zero outputs"
JOURNAL_FORMAT = "accelport-bench-journal/2"
Key = tuple[str, int]  # (configuration label, batch size)


@dataclass
class JournalState:
    """What a journal holds: finished first rounds (the row), timing rounds, configuration records."""

    rows: dict[Key, dict[str, Any]] = field(default_factory=dict)
    rounds: dict[Key, list[dict[str, Any]]] = field(default_factory=dict)  # {"samples": [...], "load": ...}
    records: dict[str, dict[str, Any]] = field(default_factory=dict)

    def rounds_done(self, key: Key) -> int:
        return len(self.rounds.get(key, []))

    @property
    def points(self) -> int:
        return len(self.rows)


def _differences(expected: dict[str, Any], found: dict[str, Any]) -> list[str]:
    return [f"{key} (journal: {json.dumps(found.get(key))}, now: {json.dumps(expected.get(key))})"
            for key in journal.differing_keys(expected, found)]


def _bad(path: Path, where: str) -> UsageError:
    return UsageError(f"--resume: {path} {where}; delete it or drop --resume to start over")


def _apply(state: JournalState, entry: Any) -> None:
    """One journal line into ``state``; a KeyError/TypeError/ValueError means the line is not a journal entry."""
    kind = entry["kind"]
    if kind == "configuration":
        state.records[str(entry["label"])] = dict(entry["record"])
    elif kind == "point":
        check_row(entry["row"], timed=False)  # what the pick reads: refused now, not after the sweep
        state.rows[(str(entry["label"]), int(entry["batch_size"]))] = dict(entry["row"])
    elif kind == "round":
        key = (str(entry["label"]), int(entry["batch_size"]))
        if not all(isinstance(s, (int, float)) and not isinstance(s, bool) for s in entry["samples"]):
            raise ValueError("a time that is not a number")  # float("5") took a string
        samples = [float(s) for s in entry["samples"]]
        if key[1] < 1 or not samples:
            raise ValueError("a round without samples or of batch size under 1")
        if not all(math.isfinite(s) and s > 0 for s in samples):
            raise ValueError("a time that is not positive and finite")
        state.rounds.setdefault(key, []).append({"samples": samples, "load": entry.get("load")})
    else:
        raise ValueError(kind)


def read_journal(path: Path, fingerprint: dict[str, Any]) -> JournalState:
    """The journal at ``path`` (empty when there is none); UsageError naming the file when it cannot be used."""
    state = JournalState()
    if not path.exists():
        _logger.warning("--resume: no %s (a mistyped --out-dir?): the sweep starts from the beginning", path)
        return state
    if path.stat().st_size == 0:  # interrupted as it was created, before its header was written
        _logger.warning("--resume: %s is empty: the sweep starts from the beginning", path)
        return state
    try:
        lines = journal.read_lines(path)
    except UnicodeDecodeError:
        raise _bad(path, "is not an accelport bench journal (unreadable first line)") from None
    header = lines[0].value if lines and lines[0].number == 1 else None
    if header is None:
        raise _bad(path, "is not an accelport bench journal (unreadable first line)")
    written = header.get("format")
    if isinstance(written, str) and written.startswith("accelport-bench-journal/") and written != JOURNAL_FORMAT:
        raise UsageError(f"--resume: {path} was written by another accelport version ({written}; this one reads "
                         f"{JOURNAL_FORMAT}): drop --resume to start over")
    if written != JOURNAL_FORMAT:
        raise _bad(path, "is not an accelport bench journal (no header)")
    differs = _differences(journal.canonical(fingerprint), header.get("fingerprint") or {})
    if differs:
        same = "flags" + (" and ACCELPORT_ALLOCATOR" if any(d.startswith("allocator ") for d in differs) else "")
        raise UsageError(f"--resume: {path} was written by a different sweep; differs in: {'; '.join(differs)}. "
                         f"Use the same {same}, another --out-dir, or drop --resume to start over")
    for line in lines[1:]:
        try:
            if line.value is None:
                raise ValueError("not a JSON object")
            _apply(state, line.value)
        except (KeyError, TypeError, ValueError) as exc:
            if line.torn:
                _logger.warning("%s line %d: cut short by the interruption, measured again", path, line.number)
                continue
            said = f": {exc}" if isinstance(exc, ValueError) and " " in str(exc) else ""
            raise _bad(path, f"line {line.number} is not a journal entry (the file is damaged{said})") from None
    if orphans := sorted(set(state.rounds) - set(state.rows)):  # a point's round is written after its row
        label, batch = orphans[0]
        raise _bad(path, f"holds timing rounds of {label!r} at batch {batch}, which it never started (the file is "
                         "damaged)")
    _logger.info("--resume: %d finished point(s) in %s", state.points, path)
    return state


class JournalWriter(journal.JournalWriter):
    """Appends entries to the journal; ``fresh`` starts a new one (header first), else appends to it."""

    def __init__(self, path: Path, fingerprint: dict[str, Any], fresh: bool):
        # a last line cut short is dropped on resume: a bad line found later is damage, not an interruption
        super().__init__(path, {"format": JOURNAL_FORMAT, "fingerprint": journal.canonical(fingerprint)},
                         fresh=fresh, torn_tail="drop")

    def point(self, row: dict[str, Any]) -> None:
        self.write([{"kind": "point", "label": row["label"], "batch_size": row["batch_size"], "row": row}])

    def round(self, key: Key, samples: list[float], load: dict[str, Any] | None) -> None:
        self.write([{"kind": "round", "label": key[0], "batch_size": key[1], "samples": samples, "load": load}])

    def configuration(self, record: dict[str, Any]) -> None:
        self.write([{"kind": "configuration", "label": record["label"], "record": record}])
