"""Intra-op thread counts for the sweep: which to try on the machine in hand, and torch's count while it runs."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ..environment import usable_cpus
from ..runners.base import torch_thread_count

# The rows' common count for the sweep (eager/compile use torch's pool; ORT/OpenVINO get the same count), restored
# after: the runners' own mechanism, under the name the sweep uses.
intra_op_threads = torch_thread_count


def physical_cores(cpuinfo: str | None = None, allowed: set[int] | None = None) -> int | None:
    """Distinct (package, core) pairs among the logical CPUs this process may run on (None: not Linux)."""
    try:
        text = cpuinfo if cpuinfo is not None else Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    allowed = allowed if allowed is not None else usable_cpus()
    cores = set()
    for block in text.strip().split("\n\n"):
        fields = {key.strip(): value.strip() for key, value in
                  (line.split(":", 1) for line in block.splitlines() if ":" in line)}
        if "processor" in fields and int(fields["processor"]) in allowed:
            cores.add((fields.get("physical id", "0"), fields.get("core id", fields["processor"])))
    return len(cores) or None


def thread_candidates(default: int | None = None, logical: int | None = None, physical: int | None = None,
                      user_set: bool | None = None) -> tuple[int, ...]:
    """--threads auto, following the machine: torch's count (the physical cores) first; where the cores run two
    hardware threads each, also every logical CPU (SMT pays on some models, not on others); on 8 cores or more
    also half of them (fewer threads synchronise less, which can win at batch 1). A count the user fixed with
    OMP_NUM_THREADS is kept alone. Each extra count adds a row per runtime and dtype, so a 2-core VM sweeps one."""
    default = default or torch.get_num_threads()
    logical = logical or len(usable_cpus())
    physical = physical if physical is not None else (physical_cores() or logical)
    user_set = "OMP_NUM_THREADS" in os.environ if user_set is None else user_set
    candidates = [default]
    if not user_set:
        if logical > physical:
            candidates.append(logical)
        if default >= 8:
            candidates.append(default // 2)
    return tuple(dict.fromkeys(candidates))
