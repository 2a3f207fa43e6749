"""The evaluation's configuration: one frozen dataclass that the CLI builds and ``evaluate`` consumes."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..models import DEFAULT_MODEL


@dataclass(frozen=True)
class EvalConfig:
    """Everything ``accelport eval`` does; every field is a CLI flag (same names as ``accelport run``'s)."""

    data: str
    labels: str = "auto"  # auto | none | PATH
    model: str = DEFAULT_MODEL
    weights: str | None = None
    require_pretrained: bool = False
    hub_timeout_s: float = 3.0
    seed: int = 0
    test_size: bool = False
    device: str = "auto"
    runtime: str = "eager"
    dtype: str = "fp32"
    channels_last: bool = False
    fp32_math: str = "strict"
    batch_size: int = 32
    workers: int = 2
    criteria: tuple[tuple[str, str], ...] = field(default_factory=tuple)
    max_disagreement: float = 0.001  # share of images whose top-1 differs and is not a near-tie
    max_accuracy_drop: float = 0.001  # reference top-1 accuracy minus target's, as a fraction
    reference_cache: str | None = None
    resume: bool = False
    skip_bad_images: bool = False
    out_dir: str = "logs"
    progress: bool = True
    worst: int = 10
    dist_timeout_s: float = 1800.0
