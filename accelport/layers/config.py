"""What ``accelport layers`` compares: the shared job spec and target, plus the comparison modes."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import RuntimeUnavailableError, UsageError
from ..job.spec import FromFlatNames, JobSpec, Target
from ..runners.base import QUANTIZED_DTYPES

MODES = ("chained", "isolated")
SUPPORTED_RUNTIMES = ("eager", "openvino")
ENGINE_MODES = {"eager": MODES, "openvino": ("chained",)}  # a compiled OpenVINO program cannot be fed one module


@dataclass(frozen=True)
class LayersConfig(FromFlatNames):
    """Every field is a flag of ``accelport layers``; the shared ones (spec, target) mean what they mean for
    ``accelport run``, whose --layers-on-fail passes its own."""

    spec: JobSpec = field(default_factory=JobSpec)
    target: Target = field(default_factory=Target)
    modes: tuple[str, ...] | None = None  # None: every mode the runtime has (both for eager, chained for openvino)

    @property
    def effective_modes(self) -> tuple[str, ...]:
        return self.modes if self.modes is not None else ENGINE_MODES.get(self.target.runtime, MODES)


def validate(config: LayersConfig) -> None:
    """Refuse what cannot be honoured before any model is built."""
    config.spec.validate()
    config.target.validate()
    modes = config.effective_modes
    if not modes or any(mode not in MODES for mode in modes):
        raise UsageError(f"--mode {','.join(modes) or '(none)'}: choose chained, isolated or both")
    runtime = config.target.runtime
    if runtime not in SUPPORTED_RUNTIMES:
        raise RuntimeUnavailableError(
            f"--runtime {runtime}: `accelport layers` supports PyTorch eager and OpenVINO targets (--runtime eager "
            "or openvino). A compiled Inductor graph or an ONNX Runtime session runs the model as a whole: its "
            "intermediate tensors are fused into kernels that do not map back to modules, and hooking the underlying "
            "eager modules would compare a different program. Run `accelport layers --runtime eager` on the same "
            "device and dtype to localise numeric error, or --runtime openvino; see docs/layers.md.")
    unsupported = [mode for mode in modes if mode not in ENGINE_MODES[runtime]]
    if unsupported:
        raise RuntimeUnavailableError(
            f"--mode {unsupported[0]} --runtime {runtime}: an OpenVINO program runs as a whole and cannot be fed the "
            "reference's input at one module; use --mode chained (its default for openvino)")
    if config.target.dtype in QUANTIZED_DTYPES and runtime != "openvino":
        raise RuntimeUnavailableError(
            f"--dtype {config.target.dtype} --runtime {runtime}: `accelport layers` compares a quantised target module "
            "by module on OpenVINO only (--runtime openvino: NNCF's int8 model keeps the module names, so its "
            "tensors at module boundaries can be read). The int8 compile package fuses each quantize/dequantize "
            "pair into kernels that keep no module outputs; see docs/int8.md.")
