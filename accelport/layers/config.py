"""What ``accelport layers`` compares: one frozen dataclass that the CLI builds and ``run_layers`` consumes."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

from ..atomic import check_writable_dir
from ..errors import RuntimeUnavailableError, UsageError
from ..models import DEFAULT_MODEL
from ..runners.base import QUANTIZED_DTYPES

if TYPE_CHECKING:
    from ..main_job.config import RunConfig

MODES = ("chained", "isolated")
SUPPORTED_RUNTIMES = ("eager",)


@dataclass(frozen=True)
class LayersConfig:
    """Every field is a flag of ``accelport layers``; the shared ones mean what they mean for ``accelport run``."""

    model: str = DEFAULT_MODEL
    weights: str | None = None
    target_weights: str | None = None  # another checkpoint of the same architecture for the target side
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
    batch_size: int = 1
    criteria: tuple[tuple[str, str], ...] = field(default_factory=tuple)
    modes: tuple[str, ...] = MODES
    out_dir: str = "logs"
    seed: int = 0

    @property
    def head(self) -> str:
        return "features" if self.features else "classifier"

    @classmethod
    def from_run_config(cls, config: RunConfig, **overrides: Any) -> LayersConfig:
        """The layer comparison of a ``run``: same model, weights, images, target and criteria, same out dir."""
        shared = {f.name: getattr(config, f.name) for f in fields(cls) if hasattr(config, f.name)}
        return cls(**{**shared, **overrides})


def validate(config: LayersConfig) -> None:
    """Refuse what cannot be honoured before any model is built."""
    check_writable_dir(config.out_dir, "--out-dir")
    if config.batch_size < 1:
        raise UsageError(f"--batch-size {config.batch_size}: must be at least 1")
    if config.hub_timeout_s <= 0:
        raise UsageError(f"--hub-timeout {config.hub_timeout_s}: must be positive")
    if not config.modes or any(mode not in MODES for mode in config.modes):
        raise UsageError(f"--mode {','.join(config.modes) or '(none)'}: choose chained, isolated or both")
    if config.dtype in QUANTIZED_DTYPES:
        raise RuntimeUnavailableError(
            f"--dtype {config.dtype}: `accelport layers` cannot compare a quantised target module by module: the "
            "engine's quantiser fuses each quantize/dequantize pair into int8 kernels, so module outputs do not exist "
            "in its graph. To localise, run `accelport layers --dtype fp32` on the same device (weight and layout "
            "faults show there), or read the structural proof of `accelport run --dtype int8` (the same engine in "
            "strict fp32); see docs/int8.md.")
    if config.runtime not in SUPPORTED_RUNTIMES:
        raise RuntimeUnavailableError(
            f"--runtime {config.runtime}: `accelport layers` supports PyTorch eager targets only (--runtime eager). "
            "A compiled graph or an ONNX Runtime/OpenVINO session runs the model as a whole: its intermediate tensors "
            "are fused or renamed and do not map back to modules, and hooking the underlying eager modules would "
            "compare a different program. Run `accelport layers --runtime eager` on the same device and dtype to "
            "localise numeric error; see docs/layers.md."
        )
