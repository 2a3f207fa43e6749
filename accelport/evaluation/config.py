"""The evaluation's configuration: the shared job spec and target, plus the dataset and eval's own fields."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from ..environment import usable_cpus
from ..errors import InputError, UsageError
from ..job.spec import FlagAliases, JobSpec, Target, negated, same, with_overrides
from ..typed_numbers import seconds_problem

# Loader processes per usable CPU --workers may ask for: decoding waits on storage at times, so a few per CPU can
# pay; 100000 forked until the machine stalled
MAX_WORKERS_PER_CPU = 4


@dataclass(frozen=True)
class EvalConfig:
    """Everything ``accelport eval`` does; every field is a CLI flag (same names as ``accelport run``'s)."""

    data: str
    FLAG_ALIASES: ClassVar[FlagAliases] = {"dist_timeout": ("dist_timeout_s", same),
                                           "no_progress": ("progress", negated)}
    UNUSED_SPEC_FIELDS: ClassVar[frozenset[str]] = frozenset({"images"})  # the images are --data's

    spec: JobSpec = field(default_factory=JobSpec)
    target: Target = field(default_factory=lambda: Target(batch_size=32))
    labels: str = "auto"  # auto | none | PATH
    workers: int = 2
    max_disagreement: float = 0.001  # share of images whose top-1 differs and is not a near-tie
    max_accuracy_drop: float = 0.001  # reference top-1 accuracy minus target's, as a fraction
    reference_cache: str | None = None
    resume: bool = False
    progress: bool = True
    worst: int = 10
    dist_timeout_s: float = 1800.0

    @classmethod
    def of(cls, data: str, **flat: Any) -> EvalConfig:
        """From flat flag names: ``EvalConfig.of(data="imagenet/val", device="cpu", batch_size=64)``."""
        return with_overrides(cls(data=data), **flat)

    def validate(self) -> None:
        self.target.validate()
        for name in ("workers", "worst"):
            if getattr(self, name) < 0:
                raise UsageError(f"--{name} {getattr(self, name)}: must be at least 0")
        if self.workers > (most := MAX_WORKERS_PER_CPU * len(usable_cpus())):  # each is a process
            raise UsageError(f"--workers {self.workers}: at most {most} here ({MAX_WORKERS_PER_CPU} loader processes "
                             f"per CPU; more only fork and wait for a CPU)")
        for name in ("max_disagreement", "max_accuracy_drop"):
            if not 0 <= getattr(self, name) <= 1:
                raise UsageError(f"--{name.replace('_', '-')} {getattr(self, name)}: must be a share between 0 and 1")
        if (problem := seconds_problem(self.dist_timeout_s)) is not None:
            raise UsageError(f"--dist-timeout {self.dist_timeout_s:g}: {problem}")
        if self.reference_cache == "":
            raise UsageError("--reference-cache '': an empty path; give a folder, or leave the flag out")
        if not str(self.data):
            raise InputError("--data '': an empty path; give the dataset's folder")
        if not Path(self.data).is_dir():  # before minutes of model loading
            raise InputError(f"--data {self.data}: not a folder")
        if self.labels not in ("auto", "none") and not Path(self.labels).is_file():
            what = "a folder, not a file" if Path(self.labels).is_dir() else "no such file"
            raise InputError(f"--labels {self.labels}: {what} (a labels file, or auto / none)")
        self.spec.validate()
        if self.reference_cache:
            from ..atomic import check_writable_dir

            check_writable_dir(self.reference_cache, "--reference-cache")
        if any(key == "max_top1_mismatches" for key, _ in self.spec.criteria):
            raise UsageError("--criterion max_top1_mismatches: eval judges a rate, use --max-disagreement instead")
        if any(key == "max_baseline_ratio" for key, _ in self.spec.criteria):  # accepted and recorded, never used
            raise UsageError("--criterion max_baseline_ratio: eval runs no same-precision baseline (run and layers "
                             "do); its criteria are min_cosine, max_rel_l2, elem_rtol, min_within_share")
