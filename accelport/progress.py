"""Progress that suits where it goes: a tqdm bar on a terminal, a plain log line now and then in a log file.

tqdm redraws its bar with carriage returns; written to a file (``2> run.log``, CI) that becomes one long line per
redraw. When stderr is not a terminal, ``progress_bar`` logs ``desc: n/total unit (postfix)`` at most every
``LOG_INTERVAL_S`` seconds instead, through logging, so it lands in the same place as every other message.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

_logger = logging.getLogger(__name__)

LOG_INTERVAL_S = 30.0


class LoggedProgress:
    """The part of tqdm's interface accelport uses, as occasional log lines."""

    def __init__(self, total: int, desc: str, unit: str, interval_s: float = LOG_INTERVAL_S):
        self.total, self.desc, self.unit, self.interval_s = total, desc, unit, interval_s
        self.n = 0
        self.postfix = ""
        self._last = time.monotonic()

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self._last >= self.interval_s:
            self._last = now
            _logger.info("%s: %d/%d %s%s", self.desc, self.n, self.total, self.unit,
                         f" ({self.postfix})" if self.postfix else "")

    def set_postfix_str(self, text: str) -> None:
        self.postfix = text

    def close(self) -> None:
        pass


class _NoProgress(LoggedProgress):
    def update(self, n: int = 1) -> None:
        self.n += n


def progress_bar(total: int, desc: str, unit: str, enabled: bool = True) -> Any:
    """A tqdm bar when stderr is a terminal, ``LoggedProgress`` when it is not, nothing when not ``enabled``."""
    if not enabled:
        return _NoProgress(total, desc, unit)
    if not sys.stderr.isatty():
        return LoggedProgress(total, desc, unit)
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, leave=False, dynamic_ncols=True)
