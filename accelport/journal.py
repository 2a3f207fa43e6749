"""Resume journals: JSON objects one a line, a header line first, each append flushed and fsynced.

bench, eval and zoo each keep one so an interrupted command (Ctrl-C, a time limit, ``kill -9``) loses nothing
already written. This module is the file format they share: the append (one ``write`` on an ``O_APPEND``
descriptor, so processes appending to one file never interleave lines, then ``fsync``), the repair of a last line
cut short by a kill, and the reader that hands back every line with where it stands. What a line means, which
damage is an error and the messages naming the file stay with each command (``<command>/journal.py``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

from .atomic import write_text_atomic

_logger = logging.getLogger(__name__)

_Writer = TypeVar("_Writer", bound="JournalWriter")


def canonical(value: Any) -> Any:
    """``value`` as it reads back from a journal (tuples become lists, keys sorted), so comparisons are fair."""
    return json.loads(json.dumps(value, sort_keys=True))


def differing_keys(expected: dict[str, Any], found: dict[str, Any], nested: bool = False) -> list[str]:
    """The keys, sorted, whose values differ between two fingerprints (a key missing on one side differs); with
    ``nested``, inside values that are objects on both sides too (``options.calibration``, not just ``options``)."""
    keys = []
    for key in sorted(set(expected) | set(found)):
        mine, theirs = expected.get(key), found.get(key)
        if mine == theirs:
            continue
        if nested and isinstance(mine, dict) and isinstance(theirs, dict):
            keys += [f"{key}.{inner}" for inner in differing_keys(mine, theirs, nested=True)]
        else:
            keys.append(key)
    return keys


def parse_object(line: str) -> dict[str, Any] | None:
    """The JSON object on ``line``; None for anything else (not JSON, or JSON but not an object)."""
    with contextlib.suppress(ValueError):  # json.JSONDecodeError is a ValueError
        value = json.loads(line)
        if isinstance(value, dict):
            return value
    return None


def encode(rows: Iterable[dict[str, Any]]) -> bytes:
    """Lines of JSON; floats keep ``repr`` precision so figures rebuilt from a journal equal the measured ones."""
    return "".join(json.dumps(row, allow_nan=True) + "\n" for row in rows).encode("utf-8")


@dataclass(frozen=True)
class Line:
    """One non-blank line of a journal: its 1-based number, its object (None when it is not one), ``torn``
    when it is the text after the file's last newline (a write cut short by a kill), and ``fragment`` when it is no
    object but begins as one: a record cut short, which a later writer may have closed with a newline."""

    number: int
    value: dict[str, Any] | None
    torn: bool
    fragment: bool = False


def read_lines(path: Path, errors: Literal["strict", "replace"] = "strict") -> list[Line]:
    """Every non-blank line of ``path`` (header included); UnicodeDecodeError with ``errors="strict"``."""
    pieces = path.read_bytes().decode("utf-8", errors).split("\n")
    lines = []
    for number, piece in enumerate(pieces, 1):
        if piece.strip():
            value = parse_object(piece)
            lines.append(Line(number, value, number == len(pieces), value is None and piece.lstrip().startswith("{")))
    return lines


def start(path: Path, header: dict[str, Any], rows: Iterable[dict[str, Any]] = ()) -> None:
    """A journal of ``header`` and ``rows`` replacing ``path`` atomically (a resumed run rewriting what it kept)."""
    write_text_atomic(path, encode([header, *rows]).decode("utf-8"))


def append(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    """``rows`` appended to the existing journal ``path`` in one ``write``, fsynced: open, write, close, safe with
    several processes appending to one file (no repair of the tail: another process may be writing it)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        _write_all(fd, encode(rows))
    finally:
        os.close(fd)


class JournalWriter:
    """Appends rows to the journal at ``path``, each ``write`` flushed to disk before it returns.

    ``header`` is written first when the file is new or empty (``fresh`` empties it: a run that does not resume).
    A last line left without its newline by a kill is either closed (``torn_tail="close"``: the reader then sees
    it as a damaged line) or dropped (``"drop"``: a damaged line found later is real damage).
    """

    def __init__(self, path: Path, header: dict[str, Any] | None = None, *, fresh: bool = False,
                 torn_tail: Literal["close", "drop"] = "close"):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | (os.O_TRUNC if fresh else 0)
        self._fd: int | None = os.open(path, flags, 0o644)
        size = os.fstat(self._fd).st_size
        if size and _last_byte(path) != b"\n":
            if torn_tail == "drop":
                size = path.read_bytes().rfind(b"\n") + 1
                os.truncate(path, size)
            else:
                self._write_bytes(b"\n")  # so the line cut short cannot swallow the next row
        if size == 0 and header is not None:  # new, emptied, or only a header cut short (dropped)
            self.write([header])

    def write(self, rows: Iterable[dict[str, Any]]) -> None:
        """``rows`` in one write, fsynced before this returns."""
        data = encode(rows)
        if data:
            self._write_bytes(data)

    def _write_bytes(self, data: bytes) -> None:
        if self._fd is None:
            raise ValueError(f"journal {self.path} is closed")
        _write_all(self._fd, data)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self: _Writer) -> _Writer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:  # a regular file takes it all in one write; the loop only guards a short write
        view = view[os.write(fd, view):]
    os.fsync(fd)


def _last_byte(path: Path) -> bytes:
    with open(path, "rb") as fh:
        fh.seek(-1, os.SEEK_END)
        return fh.read(1)
