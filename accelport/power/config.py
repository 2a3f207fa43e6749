"""What ``accelport power`` injects and where it runs: one frozen dataclass that the CLI builds."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..atomic import check_writable_dir
from ..errors import UsageError
from ..models import DEFAULT_MODEL

SIZES = (1e-4, 1e-3, 1e-2, 1e-1)  # relative noise / shift sizes tried, smallest first


@dataclass(frozen=True)
class PowerConfig:
    """Every field is a flag of ``accelport power``; the shared ones mean what they mean for ``accelport run``."""

    model: str = DEFAULT_MODEL
    weights: str | None = None
    require_pretrained: bool = False
    hub_timeout_s: float = 3.0
    images: tuple[str, ...] = ()
    skip_bad_images: bool = False
    test_size: bool = False
    features: bool = False
    device: str = "auto"
    runtime: str = "eager"
    dtype: str = "fp32"
    channels_last: bool = False
    fp32_math: str = "strict"
    batch_size: int = 8
    criteria: tuple[tuple[str, str], ...] = field(default_factory=tuple)
    sizes: tuple[float, ...] = SIZES
    locate: bool = True  # also run the layer comparison on the smallest detected size of each fault
    out_dir: str = "logs"
    seed: int = 0

    @property
    def head(self) -> str:
        return "features" if self.features else "classifier"


def validate(config: PowerConfig) -> None:
    check_writable_dir(config.out_dir, "--out-dir")
    if config.batch_size < 1:
        raise UsageError(f"--batch-size {config.batch_size}: must be at least 1")
    if not config.sizes or any(not 0 < s < 10 for s in config.sizes):
        raise UsageError(f"--sizes {','.join(map(str, config.sizes))}: each must be in (0, 10)")
