"""Numbers read from what a user typed (flags, environment variables, label files), read strictly.

Python's own readers are lenient where a typo should be an error: ``int()`` takes ``"1_0"`` as 10, ``" 5 "``, and
non-ASCII digits (``"٣"`` as 3), and raises on ``"²"`` (which ``str.isdigit`` accepts) and on more than 4300
digits. Durations have limits of their own: ``threading`` refuses waits above ~9.2e9 s, ``datetime.timedelta``
above ~8.6e13 s, and a time budget of 1e308 s overflows the arithmetic that divides it into iterations.
"""

from __future__ import annotations

import argparse
import re

# The most images any batch-size or request-size flag takes: far beyond any memory (check_batch_fits says how far
# with the model in hand), and below the 2**63 that torch's split and numpy's indexing overflow on.
MAX_BATCH_SIZE = 1 << 20
MAX_SECONDS = 1e9  # about 31 years: every timeout and time budget, well inside what threading and datetime take
_WHOLE = re.compile(r"[0-9]{1,18}")  # ASCII digits only; 18 of them stay below 2**63
_INTEGER = re.compile(r"-?[0-9]+")


def whole_number(text: str) -> int | None:
    """``text`` as a non-negative integer of at most 18 ASCII digits and nothing else, else None (callers that
    allow surrounding blanks strip them first)."""
    return int(text) if _WHOLE.fullmatch(text) else None


def integer(text: str) -> int:
    """An integer flag's value (an argparse type, and bench's lists): ASCII digits with an optional minus sign,
    nothing else (no "1_0", no blanks, no other scripts' digits); ValueError otherwise, which argparse reports as
    "invalid integer value" naming the flag. The command's own checks then say which range the flag takes."""
    if not _INTEGER.fullmatch(text):
        raise ValueError(f"{text!r} is not a whole number of ASCII digits")
    return int(text)  # ValueError past Python's 4300-digit limit


def seconds_problem(value: float) -> str | None:
    """Why ``value`` is not a usable number of seconds (a timeout or a time budget), or None when it is."""
    if not 0 < value <= MAX_SECONDS:  # nan compares false with anything
        return f"must be a number of seconds above 0 and at most {MAX_SECONDS:g} (about 31 years)"
    return None


def positive_seconds(text: str) -> float:
    """argparse type of a timeout or time budget (``nan`` and ``inf`` parse as floats: refused here)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if (problem := seconds_problem(value)) is not None:
        raise argparse.ArgumentTypeError(f"{text!r}: {problem}")
    return value

