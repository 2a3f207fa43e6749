"""One cell of the zoo (a model on one runtime in one dtype), run in a child process of its own.

The child is ``python -m accelport run ...``: the same code path as a user's run, its artifacts in the cell's
folder. It gets a session of its own (so a time-out kills it and any compiler workers it started), an
address-space limit (``RLIMIT_AS``: an allocation beyond it fails inside the child, not on the machine) and,
on Linux, dies with its parent (``PR_SET_PDEATHSIG``), so a killed sweep leaves no orphan writing into a cell
that ``--resume`` runs again. Whatever happens to the child becomes a row: passed, failed (parity),
unsupported (exit 2, with the child's one-line reason), crashed (internal error, signal, out of memory) or
timed out.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..runners.base import QUANTIZED_DTYPES
from .config import ZooConfig

_logger = logging.getLogger(__name__)

STATUSES = ("passed", "failed", "unsupported", "crashed", "timed_out")
EXPLAINED = ("passed", "unsupported")  # the statuses that keep the sweep's exit code at 0
LOG_TAIL_BYTES = 16384
_OOM_MARKERS = ("MemoryError", "can't allocate memory", "Cannot allocate memory", "std::bad_alloc",
                "out of memory", "OutOfMemoryError", "failed to map segment")
_PR_SET_PDEATHSIG = 1
_NOT = {">=": "<", "<=": ">", "==": "!=", ">": "<=", "<": ">="}


@dataclass(frozen=True)
class Cell:
    model: str
    runtime: str
    dtype: str

    @property
    def key(self) -> str:
        return f"{self.model}|{self.runtime}|{self.dtype}"

    def folder(self, out_dir: Path) -> Path:
        return out_dir / "cells" / re.sub(r"[^A-Za-z0-9._-]", "_", self.model) / f"{self.runtime}-{self.dtype}"


def child_command(cell: Cell, config: ZooConfig, device: str, folder: Path) -> list[str]:
    """``accelport run`` for one cell, with the sweep's shared settings."""
    command = [sys.executable, "-m", "accelport", "run", "--model", cell.model, "--runtime", cell.runtime,
               "--dtype", cell.dtype, "--device", device, "--batch-size", str(config.batch_size),
               "--warmup", str(config.warmup), "--iters", str(config.iters), "--seed", str(config.spec.seed),
               "--hub-timeout", str(config.spec.hub_timeout_s), "--out-dir", str(folder), "-q"]
    if config.spec.images:
        command += ["--images", *[str(Path(p).resolve()) for p in config.spec.images]]
    if config.spec.features:
        command.append("--features")
    if config.spec.require_pretrained:
        command.append("--require-pretrained")
    if config.calibration and cell.dtype in QUANTIZED_DTYPES:
        command += ["--calibration", *[str(Path(p).resolve()) for p in config.calibration]]
    return command


def _limit_child(memory_bytes: int | None) -> None:
    """Runs in the child between fork and exec: its memory limit, and death with the parent (Linux)."""
    if memory_bytes:
        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def run_cell(cell: Cell, config: ZooConfig, device: str, env: dict[str, str]) -> dict[str, Any]:
    """Run ``cell`` in a child process within the time and memory limits; always returns its row."""
    folder = cell.folder(Path(config.spec.out_dir))
    shutil.rmtree(folder, ignore_errors=True)  # a cell cut off by a killed sweep starts clean
    folder.mkdir(parents=True)
    memory = int(config.memory_gb * 1024**3) if config.memory_gb else None
    started = time.perf_counter()
    timed_out = False
    with open(folder / "child.log", "wb") as log:
        child = subprocess.Popen(child_command(cell, config, device, folder), stdout=log, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, env=env, start_new_session=True,
                                 preexec_fn=lambda: _limit_child(memory))
        try:
            returncode = child.wait(timeout=config.timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill_session(child)
            returncode = child.wait()
    wall_s = time.perf_counter() - started
    fields = summary_fields(folder / "summary.json")
    status, reason = classify(returncode, timed_out, _tail(folder / "child.log"), config, bool(fields))
    failing, proof = fields.pop("failed_checks", None), fields.pop("structural_proof", None)
    if status == "failed" and failing:
        reason = failed_reason(failing, proof, cell.dtype)
    row = {"model": cell.model, "runtime": cell.runtime, "dtype": cell.dtype, "status": status, "reason": reason,
           "exit_code": returncode, **fields, "wall_s": round(wall_s, 3)}
    _logger.info("%s: %s%s (%.1f s)", cell.key, status, f" ({reason})" if reason else "", wall_s)
    return row


def _kill_session(child: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):  # it ended already
        os.killpg(child.pid, signal.SIGKILL)  # the child and anything it started (Inductor's compile workers)


def _tail(path: Path) -> list[str]:
    with open(path, "rb") as fh:
        fh.seek(max(0, path.stat().st_size - LOG_TAIL_BYTES))
        return [line.strip() for line in fh.read().decode("utf-8", "replace").splitlines() if line.strip()]


def classify(returncode: int, timed_out: bool, tail: list[str], config: ZooConfig,
             wrote_summary: bool) -> tuple[str, str | None]:
    """A child's end -> (status, reason). The reason is one line a reader can act on; None for a pass.

    Exit 0/1 count as a verdict only with the summary.json they promise: a Python that dies before accelport's
    own error handling (e.g. importing torch over the memory limit) also exits 1, and that is a crash."""
    if timed_out:
        return "timed_out", f"no result within the {config.timeout_s:g} s limit (--timeout)"
    last = tail[-1] if tail else ""
    oom = next((line for line in reversed(tail) if any(m in line for m in _OOM_MARKERS)), None)
    if returncode in (0, 1) and wrote_summary:
        return ("passed", None) if returncode == 0 else ("failed", "parity failed")
    if returncode == 2:
        errors = [line for line in tail if line.startswith("accelport: error: ")]
        return "unsupported", (errors[-1].removeprefix("accelport: error: ") if errors else last)[:500]
    if oom is not None:
        limit = f" (limit {config.memory_gb:g} GB, --memory-limit)" if config.memory_gb else ""
        return "crashed", f"out of memory{limit}: {oom[:300]}"
    if returncode < 0:
        name = signal.Signals(-returncode).name if -returncode in signal.Signals._value2member_map_ else returncode
        hint = " (out of memory?)" if returncode == -signal.SIGKILL else ""
        return "crashed", f"killed by {name}{hint}"
    return "crashed", f"exit {returncode}: {last[:400]}"


def failed_reason(failing: list[str], proof: str | None, dtype: str) -> str:
    """A failed cell's reason: its failing checks and, as run's "reading:" line, whether the port is cleared."""
    reason = "failed checks: " + "; ".join(failing)
    if proof == "passed":
        reason += (f" (the structural proof passed: the same engine in strict fp32 matches, so these checks measure "
                   f"{dtype}'s own error, not the port's)")
    return reason


def _number(value: float | None) -> str:
    """A check's value as the child wrote it: summary.json holds NaN and infinities as null (``json_safe``)."""
    return "nan" if value is None else format(value, ".6g")


def summary_fields(path: Path) -> dict[str, Any]:
    """What the zoo keeps from a cell's summary.json (absent when the child wrote none)."""
    if not path.is_file():
        return {}
    summary = json.loads(path.read_text(encoding="utf-8"))
    target, compute = summary.get("target", {}), summary.get("latency", {}).get("compute", {})
    parity = summary.get("parity", {})
    failing = [f"{c['name']} {_number(c['value'])} {_NOT.get(c['op'], 'vs')} {c['threshold']:g}"
               for c in parity.get("checks", []) if not c.get("passed")]
    return {"output_shape": summary.get("output_shape"), "cosine": summary.get("cosine_similarity"),
            "max_abs_diff": summary.get("max_abs_diff"), "worst_rel_l2": parity.get("worst_sample_rel_l2"),
            "top1_match": summary.get("top1_match"), "weights": summary.get("weights", {}).get("source"),
            "input_size": summary.get("model", {}).get("data_config", {}).get("input_size"),
            "export_route": target.get("export_route") or target.get("compile_mode"),
            "latency_ms": compute.get("mean_ms"), "p50_ms": compute.get("p50_ms"), "setup_s": target.get("setup_s"),
            "timing_reliable": summary.get("latency", {}).get("reliability", {}).get("reliable"),
            "input_blind": summary.get("input_blind"),  # run's own judgement (None: a summary from before)
            "failed_checks": failing,
            "structural_proof": (summary.get("structural_proof") or {}).get("status")}

