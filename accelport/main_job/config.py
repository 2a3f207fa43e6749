"""The run's configuration: one frozen dataclass that the CLI builds and the API consumes."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..models import DEFAULT_MODEL


@dataclass(frozen=True)
class RunConfig:
    """Everything ``accelport run`` (and ``python inference.py``) does; every field is a CLI flag."""

    model: str = DEFAULT_MODEL
    weights: str | None = None
    target_weights: str | None = None  # another checkpoint of the same architecture for the target side only
    require_pretrained: bool = False
    hub_timeout_s: float = 3.0
    images: tuple[str, ...] = ()
    calibration: tuple[str, ...] = ()  # --dtype int8: calibration images (default: the bundled samples)
    skip_bad_images: bool = False
    test_size: bool = False
    features: bool = False
    device: str = "auto"
    runtime: str = "eager"
    dtype: str = "fp32"
    channels_last: bool = False
    streams: int = 1  # OpenVINO: split each batch over this many parallel streams
    micro_batch: int | None = None  # OpenVINO: requests of at most this many images (default: one per stream)
    fp32_math: str = "strict"
    batch_size: int = 1
    warmup: int = 10
    iters: int = 50
    criteria: tuple[tuple[str, str], ...] = field(default_factory=tuple)
    out_dir: str = "logs"
    save_outputs: bool = False
    layers_on_fail: bool = False
    structural_proof: bool = True  # half precision / fp32-fast: also run the target in strict fp32
    seed: int = 0

    @property
    def head(self) -> str:
        return "features" if self.features else "classifier"
