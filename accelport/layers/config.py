"""What ``accelport layers`` compares: the shared job spec and target, plus the comparison modes."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import RuntimeUnavailableError, UsageError
from ..job.spec import FromFlatNames, JobSpec, Target
from ..runners.base import QUANTIZED_DTYPES

MODES = ("chained", "isolated")
SUPPORTED_RUNTIMES = ("eager",)


@dataclass(frozen=True)
class LayersConfig(FromFlatNames):
    """Every field is a flag of ``accelport layers``; the shared ones (spec, target) mean what they mean for
    ``accelport run``, whose --layers-on-fail passes its own."""

    spec: JobSpec = field(default_factory=JobSpec)
    target: Target = field(default_factory=Target)
    modes: tuple[str, ...] = MODES


def validate(config: LayersConfig) -> None:
    """Refuse what cannot be honoured before any model is built."""
    config.spec.validate()
    config.target.validate()
    if not config.modes or any(mode not in MODES for mode in config.modes):
        raise UsageError(f"--mode {','.join(config.modes) or '(none)'}: choose chained, isolated or both")
    if config.target.dtype in QUANTIZED_DTYPES:
        raise RuntimeUnavailableError(
            f"--dtype {config.target.dtype}: `accelport layers` cannot compare a quantised target module by module: "
            "the engine's quantiser fuses each quantize/dequantize pair into int8 kernels, so module outputs do not "
            "exist in its graph. To localise, run `accelport layers --dtype fp32` on the same device (weight and "
            "layout faults show there), or read the structural proof of `accelport run --dtype int8` (the same "
            "engine in strict fp32); see docs/int8.md.")
    if config.target.runtime not in SUPPORTED_RUNTIMES:
        raise RuntimeUnavailableError(
            f"--runtime {config.target.runtime}: `accelport layers` supports PyTorch eager targets only (--runtime "
            "eager). A compiled graph or an ONNX Runtime/OpenVINO session runs the model as a whole: its intermediate "
            "tensors are fused or renamed and do not map back to modules, and hooking the underlying eager modules "
            "would compare a different program. Run `accelport layers --runtime eager` on the same device and dtype "
            "to localise numeric error; see docs/layers.md."
        )
