"""How values read in reports: a comparison that never reads as bad arithmetic, and no bare ``None``."""

from __future__ import annotations

import math
import os
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import Any

_MAX_DIGITS = 17  # enough to tell any two doubles apart
NO_WEIGHTS_FILE = "none (random init)"  # what a missing checkpoint path or sha256 means


def _shortest(value: float) -> int:
    """Significant digits of the shortest text that reads back as ``value`` (0.99999 -> 5)."""
    mantissa = repr(float(value)).lower().split("e")[0].replace("-", "").replace(".", "").lstrip("0")
    return max(1, len(mantissa))


def _holds(op: str, left: float, right: float) -> bool:
    return left >= right if op == ">=" else left <= right


def format_comparison(value: float, op: str, threshold: float) -> tuple[str, str]:
    """``value`` and ``threshold`` as text with enough digits that the printed comparison tells the truth.

    Starts at the threshold's own precision (at least 6 significant digits) and adds digits until the two texts,
    read back, compare as the numbers do: ``0.999994 >= 0.99999`` passes, and a value just below a threshold
    never prints as ``1 >= 1``.
    """
    value, threshold = float(value), float(threshold)
    if not (math.isfinite(value) and math.isfinite(threshold)):
        return format(value, ".6g"), format(threshold, ".6g")
    digits = max(6, _shortest(threshold))
    while True:
        left, right = format(value, f".{digits}g"), format(threshold, f".{digits}g")
        truthful = _holds(op, float(left), float(right)) == _holds(op, value, threshold)
        if digits >= _MAX_DIGITS or (truthful and (left != right or value == threshold)):
            return left, right
        digits += 1


def or_missing(value: Any, meaning: str) -> str:
    """``str(value)``, or what its absence means (never a bare ``None``)."""
    return meaning if value is None else str(value)


def comparison_text(value: float, op: str, threshold: float) -> str:
    """``"0.999994 >= 0.99999"``: a check as one truthful expression."""
    left, right = format_comparison(value, op, threshold)
    return f"{left} {op} {right}"


def listed(items: Sequence[str], limit: int = 5) -> str:
    """The first ``limit`` items joined by commas, and how many were left out: a cut list never reads as whole."""
    more = f" (+{len(items) - limit} more)" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def printable(text: str) -> str:
    """``text`` with control characters escaped (a newline in a file name reads ``\\n``, not a broken line)."""
    return "".join(repr(char)[1:-1] if unicodedata.category(char).startswith("C") else char for char in text)


def skipped_lines(skipped: Sequence[tuple[str, str]], bullet: str) -> list[str]:
    """The files ``--skip-bad-images`` left out, with why, one per line under a heading line; [] when none."""
    if not skipped:
        return []
    return [f"{len(skipped)} file(s) skipped as unreadable (--skip-bad-images), not compared:",
            *(f"{bullet}{printable(path)}: {printable(reason.removeprefix(f'{path}: '))}" for path, reason in skipped)]


def markdown_cell(text: str) -> str:
    """``text`` safe inside one cell of a Markdown table: printable, and its ``|`` escaped."""
    return printable(text).replace("|", "\\|")


def short_paths(paths: Sequence[str | Path]) -> list[str]:
    """Each path relative to the folder all of them share: the file name when they share one folder, and still
    unique when two folders hold files of the same name (``a/cat.jpg``, ``b/cat.jpg``)."""
    if not paths:
        return []
    resolved = [os.path.abspath(path) for path in paths]
    common = os.path.commonpath([os.path.dirname(path) for path in resolved])
    return [os.path.relpath(path, common) for path in resolved]


def one_line(text: str, limit: int = 300) -> str:
    """The first line of ``text``, at most ``limit`` characters: an engine's error can be a page long (a dispatcher
    dump), and a table cell or a console line must stay one line; the whole text stays in the JSON."""
    first = text.strip().splitlines()[0] if text.strip() else ""
    return first if len(first) <= limit else first[: limit - 1] + "…"
