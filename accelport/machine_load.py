"""What else the machine was doing while we timed: load average, CPU steal, other processes' busy time.

A timing is only as good as the machine it was taken on. ``LoadMonitor`` reads ``/proc`` before and after a
timed stretch and reports, for that window, how many cores other processes kept busy on the CPUs this process
may use (their CPU time in ``/proc/stat`` minus this process's own from ``/proc/self/stat``), the share of CPU
time the hypervisor stole, the load average and the busiest other processes (``/proc/[pid]/stat``). Where
``/proc`` does not exist (macOS, Windows) the window is None and the timing is judged by its own dispersion only
(``reliability.py``).
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .errors import UsageError

# A window shorter than this is stretched by an idle probe after the timing: /proc/stat counts in clock ticks
# (10 ms per CPU), so a few milliseconds say nothing about the other processes. ``ACCELPORT_LOAD_WINDOW_S``
# changes it (the test suite shortens it: its hundreds of millisecond timings, each padded to 0.25 s, slept 43 s).
MIN_WINDOW_S = 0.25
WINDOW_ENV = "ACCELPORT_LOAD_WINDOW_S"
_TICK_S = 1.0 / os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 0.01
_PROC = Path("/proc")


@dataclass(frozen=True)
class CpuReading:
    """Cumulative counters at one instant (ticks; ``wall_s`` from the monotonic clock)."""

    wall_s: float
    cpu_count: int
    busy_ticks: int  # user + nice + system + irq + softirq, all CPUs (guest time is inside user)
    steal_ticks: int
    total_ticks: int  # busy + idle + iowait + steal
    own_ticks: int  # this process, every thread
    processes: dict[int, tuple[str, int]]  # other pid -> (name, utime + stime)
    loadavg: tuple[float, float, float]
    procs_running: int


@dataclass(frozen=True)
class LoadWindow:
    """The machine between two readings, in cores (1.0 = one CPU busy the whole window)."""

    seconds: float
    cpu_count: int
    foreign_busy_cores: float  # other processes (and the kernel on their behalf)
    own_busy_cores: float
    steal_share: float  # of all CPU time in the window
    loadavg_before: list[float]
    loadavg_after: list[float]
    procs_running_before: int
    procs_running_after: int
    busiest_others: list[dict[str, Any]] = field(default_factory=list)  # pid, name, cores; at most 3

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _int_fields(line: str) -> list[int]:
    return [int(x) for x in line.split()[1:]]


def _process_ticks(stat_text: str) -> tuple[str, int]:
    """(name, utime + stime) from a ``/proc/[pid]/stat`` line; the name may hold spaces and parentheses."""
    name = stat_text[stat_text.find("(") + 1 : stat_text.rfind(")")]
    rest = stat_text[stat_text.rfind(")") + 2 :].split()
    return name, int(rest[11]) + int(rest[12])  # fields 14 and 15 of proc(5)


def _other_processes() -> dict[int, tuple[str, int]]:
    own = os.getpid()
    found = {}
    for entry in _PROC.iterdir():
        if entry.name.isdigit() and int(entry.name) != own:
            try:
                found[int(entry.name)] = _process_ticks((entry / "stat").read_text())
            except (OSError, ValueError, IndexError):  # the process ended while we looked
                continue
    return found


def _allowed_cpus(stat: list[str]) -> list[list[int]]:
    """The ``cpuN`` counters of the CPUs this process may run on: in a container pinned to 4 of 64 CPUs, load on
    the other 60 does not compete with the timing."""
    try:
        allowed = os.sched_getaffinity(0)
    except (AttributeError, OSError):
        allowed = None
    rows = {int(line[3:].split()[0]): _int_fields(line) + [0] * 8 for line in stat
            if line[:3] == "cpu" and line[3:4].isdigit()}
    chosen = [fields for cpu, fields in rows.items() if allowed is None or cpu in allowed]
    return chosen or list(rows.values())


def read_cpu() -> CpuReading | None:
    """The counters now, or None where ``/proc`` cannot be read."""
    try:
        stat = (_PROC / "stat").read_text().splitlines()
        loadavg = (_PROC / "loadavg").read_text().split()
        own = _process_ticks((_PROC / "self" / "stat").read_text())[1]
    except (OSError, ValueError, IndexError):
        return None
    per_cpu = _allowed_cpus(stat)
    user, nice, system, idle, iowait, irq, softirq, steal = (sum(c[i] for c in per_cpu) for i in range(8))
    running = next((int(line.split()[1]) for line in stat if line.startswith("procs_running")), 0)
    busy = user + nice + system + irq + softirq
    return CpuReading(
        wall_s=time.monotonic(), cpu_count=len(per_cpu),
        busy_ticks=busy, steal_ticks=steal, total_ticks=busy + idle + iowait + steal, own_ticks=own,
        processes=_other_processes(), loadavg=(float(loadavg[0]), float(loadavg[1]), float(loadavg[2])),
        procs_running=running)


def window_between(before: CpuReading, after: CpuReading) -> LoadWindow:
    """What happened between two readings (a pure function of them)."""
    seconds = max(after.wall_s - before.wall_s, 1e-9)
    own = (after.own_ticks - before.own_ticks) * _TICK_S / seconds
    busy = (after.busy_ticks - before.busy_ticks) * _TICK_S / seconds
    total = after.total_ticks - before.total_ticks
    others: list[dict[str, Any]] = []
    for pid, (name, ticks) in after.processes.items():
        start = before.processes.get(pid, (name, ticks))[1]  # new since: its share is in the /proc/stat total
        cores = (ticks - start) * _TICK_S / seconds
        if cores >= 0.05:
            others.append({"pid": pid, "name": name, "cores": round(cores, 3)})
    others.sort(key=lambda p: -p["cores"])
    return LoadWindow(
        seconds=round(seconds, 4), cpu_count=after.cpu_count, foreign_busy_cores=round(max(0.0, busy - own), 3),
        own_busy_cores=round(own, 3), steal_share=round((after.steal_ticks - before.steal_ticks) / total, 4)
        if total > 0 else 0.0, loadavg_before=list(before.loadavg), loadavg_after=list(after.loadavg),
        procs_running_before=before.procs_running, procs_running_after=after.procs_running,
        busiest_others=others[:3])


def min_window_from_env() -> float:
    """``MIN_WINDOW_S``, or the seconds ``ACCELPORT_LOAD_WINDOW_S`` gives (0 turns the padding off)."""
    value = os.environ.get(WINDOW_ENV)
    if value is None:
        return MIN_WINDOW_S
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not 0.0 <= seconds <= 60.0:
        raise UsageError(f"{WINDOW_ENV}={value!r}: give the load window in seconds, from 0 to 60 "
                         f"(default {MIN_WINDOW_S})")
    return seconds


class LoadMonitor:
    """``with LoadMonitor() as load: <timed code>``; then ``load.window`` (None without ``/proc``).

    A window shorter than ``min_window_s`` is completed by sleeping after the timed code (never during it),
    so that the other processes' load is measured over enough clock ticks to mean something.
    """

    def __init__(self, min_window_s: float | None = None):
        self.min_window_s = min_window_from_env() if min_window_s is None else min_window_s
        self.window: LoadWindow | None = None
        self._before: CpuReading | None = None

    def __enter__(self) -> LoadMonitor:
        self._before = read_cpu()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._before is None:
            return
        remaining = self.min_window_s - (time.monotonic() - self._before.wall_s)
        if remaining > 0 and exc[0] is None:
            time.sleep(remaining)
        after = read_cpu()
        self.window = window_between(self._before, after) if after is not None else None


def probe(seconds: float = 0.5) -> LoadWindow | None:
    """The machine's load over ``seconds`` while this process sleeps: is it quiet enough to time on?"""
    with LoadMonitor(min_window_s=seconds) as monitor:
        pass
    return monitor.window
