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
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from ..errors import UsageError

_logger = logging.getLogger(__name__)

JOURNAL_NAME = "bench_journal.jsonl"
JOURNAL_FORMAT = "accelport-bench-journal/1"
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


def _canonical(value: Any) -> Any:
    return json.loads(json.dumps(value, sort_keys=True))


def _differences(expected: dict[str, Any], found: dict[str, Any]) -> list[str]:
    return [f"{key} (journal: {json.dumps(found.get(key))}, now: {json.dumps(expected.get(key))})"
            for key in sorted(set(expected) | set(found)) if expected.get(key) != found.get(key)]


def _bad(path: Path, where: str) -> UsageError:
    return UsageError(f"--resume: {path} {where}; delete it or drop --resume to start over")


def _apply(state: JournalState, entry: Any) -> None:
    """One journal line into ``state``; a KeyError/TypeError/ValueError means the line is not a journal entry."""
    kind = entry["kind"]
    if kind == "configuration":
        state.records[str(entry["label"])] = dict(entry["record"])
    elif kind == "point":
        state.rows[(str(entry["label"]), int(entry["batch_size"]))] = dict(entry["row"])
    elif kind == "round":
        key = (str(entry["label"]), int(entry["batch_size"]))
        state.rounds.setdefault(key, []).append({"samples": [float(s) for s in entry["samples"]],
                                                 "load": entry.get("load")})
    else:
        raise ValueError(kind)


def read_journal(path: Path, fingerprint: dict[str, Any]) -> JournalState:
    """The journal at ``path`` (empty when there is none); UsageError naming the file when it cannot be used."""
    state = JournalState()
    if not path.exists():
        _logger.info("--resume: no %s yet: the sweep starts from the beginning", path)
        return state
    try:
        lines = path.read_bytes().decode("utf-8").split("\n")
        header = json.loads(lines[0])
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise _bad(path, "is not an accelport bench journal (unreadable first line)") from None
    if not isinstance(header, dict) or header.get("format") != JOURNAL_FORMAT:
        raise _bad(path, "is not an accelport bench journal (no header)")
    differs = _differences(_canonical(fingerprint), header.get("fingerprint") or {})
    if differs:
        raise UsageError(f"--resume: {path} was written by a different sweep; differs in: {'; '.join(differs)}. "
                         "Use the same flags, another --out-dir, or drop --resume to start over")
    last = len(lines) - 1  # the text after the final newline: empty, or a line cut short
    for number, line in enumerate(lines[1:], 2):
        if not line.strip():
            continue
        try:
            _apply(state, json.loads(line))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            if number - 1 == last:
                _logger.warning("%s line %d: cut short by the interruption, measured again", path, number)
                continue
            raise _bad(path, f"line {number} is not a journal entry (the file is damaged)") from None
    _logger.info("--resume: %d finished point(s) in %s", state.points, path)
    return state


class JournalWriter:
    """Appends entries to the journal; ``fresh`` starts a new one (header first), else appends to it."""

    def __init__(self, path: Path, fingerprint: dict[str, Any], fresh: bool):
        path.parent.mkdir(parents=True, exist_ok=True)
        if not fresh and path.exists():
            data = path.read_bytes()
            if data and not data.endswith(b"\n"):  # drop a last line cut short: a bad line later is damage
                os.truncate(path, data.rfind(b"\n") + 1)
        self.path = path
        self._fh: IO[str] = open(path, "w" if fresh else "a", encoding="utf-8")  # noqa: SIM115 (close())
        if fresh:
            self._write({"format": JOURNAL_FORMAT, "fingerprint": _canonical(fingerprint)})

    def _write(self, entry: dict[str, Any]) -> None:
        self._fh.write(json.dumps(entry, allow_nan=True) + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def point(self, row: dict[str, Any]) -> None:
        self._write({"kind": "point", "label": row["label"], "batch_size": row["batch_size"], "row": row})

    def round(self, key: Key, samples: list[float], load: dict[str, Any] | None) -> None:
        self._write({"kind": "round", "label": key[0], "batch_size": key[1], "samples": samples, "load": load})

    def configuration(self, record: dict[str, Any]) -> None:
        self._write({"kind": "configuration", "label": record["label"], "record": record})

    def close(self) -> None:
        self._fh.close()
