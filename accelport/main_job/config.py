"""The run's configuration: the shared job spec and target, plus the run's own measurement and output fields."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from ..errors import UsageError
from ..job.spec import FlagAliases, FromFlatNames, JobSpec, Target, negated


@dataclass(frozen=True)
class RunConfig(FromFlatNames):
    """Everything ``accelport run`` (and ``python inference.py``) does; every field is a CLI flag."""

    FLAG_ALIASES: ClassVar[FlagAliases] = {"no_structural_proof": ("structural_proof", negated)}

    spec: JobSpec = field(default_factory=JobSpec)
    target: Target = field(default_factory=Target)  # runtime "auto": picked from a bench sweep (bench/pick.py)
    warmup: int = 10
    iters: int = 50
    save_outputs: bool = False
    layers_on_fail: bool = False
    structural_proof: bool = True  # half precision / fp32-fast: also run the target in strict fp32

    def validate(self) -> None:
        self.spec.validate()
        self.target.validate(auto_allowed=True)
        if self.iters < 1:
            raise UsageError(f"--iters {self.iters}: must be at least 1")
        if self.warmup < 0:
            raise UsageError(f"--warmup {self.warmup}: must be at least 0")
