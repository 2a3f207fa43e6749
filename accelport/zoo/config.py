"""What ``accelport zoo`` sweeps (models x runtimes x dtypes) and the limits each cell runs under.

``validate`` checks everything a user can get wrong (models, patterns, runtimes, dtypes, the output folder)
before any model is loaded or any child is started, so bad input is one exit-2 line, never a half-done sweep.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from ..errors import InputError, UsageError
from ..job.spec import FlagAliases, FromFlatNames, JobSpec, negated, same
from ..typed_numbers import MAX_BATCH_SIZE, seconds_problem

ZOO_RUNTIMES = ("eager", "compile", "onnxruntime", "openvino")
DEFAULT_CPU_MEMORY_GB = 16.0
PATTERN_CHARS = "*?["


@dataclass(frozen=True)
class ZooConfig(FromFlatNames):
    """Every field is a flag of ``accelport zoo``. The spec's model and weights are per cell (each cell looks its
    weights up as ``run`` does); its inputs, device, weight lookup, seed and out dir are the sweep's."""

    FLAG_ALIASES: ClassVar[FlagAliases] = {"timeout": ("timeout_s", same), "memory_limit": ("memory_gb", same),
                                           "no_progress": ("progress", negated), "no_plot": ("plot", negated)}
    # each cell is `accelport run` on a pretrained model with its defaults: no own checkpoint, criteria or numerics
    UNUSED_SPEC_FIELDS: ClassVar[frozenset[str]] = frozenset({"model", "weights", "target_weights", "criteria",
                                                              "fp32_math", "test_size", "skip_bad_images"})

    spec: JobSpec = field(default_factory=lambda: JobSpec(out_dir="logs/zoo"))
    models: tuple[str, ...] = ()  # names or timm.list_models patterns ("convnextv2_*", "*resnet*")
    models_file: str | None = None  # one name or pattern a line; '#' starts a comment
    runtimes: tuple[str, ...] = ZOO_RUNTIMES
    dtypes: tuple[str, ...] = ("fp32",)
    batch_size: int = 1
    warmup: int = 3
    iters: int = 20
    timeout_s: float = 900.0  # per cell (one model on one runtime in one dtype), in its own child process
    # Address-space limit of each child (RLIMIT_AS), GB; 0: none; None: DEFAULT_CPU_MEMORY_GB on the CPU and none
    # on an accelerator (CUDA and other drivers reserve far more virtual address space than they use).
    memory_gb: float | None = None
    cache_dir: str | None = None
    resume: bool = False
    progress: bool = True
    plot: bool = True
    calibration: tuple[str, ...] = ()  # int8 cells: the quantisers' calibration images; () = the bundled samples

    def validate(self) -> None:
        from ..runners import INPUT_DTYPES, check_runtimes_and_dtypes, check_sweep_calibration

        check_runtimes_and_dtypes(self.runtimes, self.dtypes, allowed=INPUT_DTYPES)
        if not self.runtimes or not self.dtypes:
            raise UsageError("--runtimes and --dtypes each need at least one value")
        check_sweep_calibration(self.dtypes, self.calibration)  # before any cell
        if not self.models and not self.models_file:
            raise UsageError("no models: give --models NAME_OR_PATTERN... and/or --models-file FILE")
        if not 1 <= self.batch_size <= MAX_BATCH_SIZE:
            raise UsageError(f"--batch-size {self.batch_size}: must be between 1 and {MAX_BATCH_SIZE}")
        for name, value, low in (("--iters", self.iters, 1), ("--warmup", self.warmup, 0)):
            if value < low:
                raise UsageError(f"{name} {value}: must be at least {low}")
        if (problem := seconds_problem(self.timeout_s)) is not None:
            raise UsageError(f"--timeout {self.timeout_s:g}: {problem}")
        if self.memory_gb is not None and not (self.memory_gb == 0 or MIN_MEMORY_GB <= self.memory_gb <= MAX_MEMORY_GB):
            raise UsageError(f"--memory-limit {self.memory_gb}: must be 0 (no limit) or a number of GB from "
                             f"{MIN_MEMORY_GB:g} (below it Python itself cannot start) to {MAX_MEMORY_GB:g} (what a "
                             "process's address-space limit can hold)")
        self.spec.validate()


# Below this not even Python's own libraries map (a crash, not an out-of-memory row); a limit under one byte was
# read as none. Importing torch maps 2-4 GiB of address space: a limit under that is a clear out-of-memory row.
MIN_MEMORY_GB = 0.1
MAX_MEMORY_GB = 2.0 ** 32  # in GiB, 2^62 bytes: RLIMIT_AS is a signed 64-bit byte count (2e10 failed in the child)


def read_models_file(path: str) -> list[str]:
    """Names and patterns from a file, one a line; blank lines and '#' comments are skipped."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"--models-file {path}: cannot be read ({getattr(exc, 'strerror', None) or exc})") from None
    return [line.split("#", 1)[0].strip() for line in text.splitlines() if line.split("#", 1)[0].strip()]


def resolve_models(config: ZooConfig) -> list[str]:
    """Names and patterns -> timm model names, in the order given (a pattern's matches sorted), no repeats.

    Only timm's registry is consulted (``timm.is_model``, ``timm.list_models``): nothing is created here.
    """
    import timm

    from ..models import timm_name, unknown_model_reason

    wanted = [(item, "--models") for item in config.models] + (
        [(item, f"--models-file {config.models_file}:") for item in read_models_file(config.models_file)]
        if config.models_file else [])
    names: list[str] = []
    for item, source in wanted:
        if any(char in item for char in PATTERN_CHARS):
            matches = timm.list_models(item)
            if not matches:
                raise UsageError(f"{source} {item!r}: the pattern matches no timm model")
            names.extend(matches)
        elif reason := unknown_model_reason(timm_name(item)):
            raise UsageError(f"{source} {item!r}: {reason}")
        else:
            names.append(timm_name(item))
    if not names:
        raise UsageError("no models: --models-file lists none")
    return list(dict.fromkeys(names))


def child_environment(config: ZooConfig) -> dict[str, str]:
    """The environment of each cell's child: the cache folder, and no torchrun variables (a child is a single
    process on its rank's device, not a member of the job)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "ROLE_RANK",
                        "ROLE_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID")}
    if config.cache_dir:
        env["ACCELPORT_CACHE_DIR"] = str(Path(config.cache_dir).resolve())
    return env
