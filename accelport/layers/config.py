"""What ``accelport layers`` compares: the shared job spec and target, plus the comparison modes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from ..errors import RuntimeUnavailableError, UsageError
from ..job.spec import FlagAliases, FromFlatNames, JobSpec, Target
from ..runners.base import QUANTIZED_DTYPES

MODES = ("chained", "isolated")
MODE_CHOICES: dict[str | None, tuple[str, ...] | None] = {"both": MODES, "chained": ("chained",),
                                                          "isolated": ("isolated",), None: None}  # --mode
SUPPORTED_RUNTIMES = ("eager", "openvino", "onnxruntime")
# A compiled engine program (OpenVINO, an ONNX Runtime session) cannot be fed the reference's input at one module.
ENGINE_MODES = {"eager": MODES, "openvino": ("chained",), "onnxruntime": ("chained",)}


@dataclass(frozen=True)
class LayersConfig(FromFlatNames):
    """Every field is a flag of ``accelport layers``; the shared ones (spec, target) mean what they mean for
    ``accelport run``, whose --layers-on-fail passes its own."""

    FLAG_ALIASES: ClassVar[FlagAliases] = {"mode": ("modes", lambda mode: MODE_CHOICES.get(mode, mode))}

    spec: JobSpec = field(default_factory=JobSpec)
    target: Target = field(default_factory=Target)
    modes: tuple[str, ...] | None = None  # None: every mode the runtime has (eager: both; the engines: chained)

    @property
    def effective_modes(self) -> tuple[str, ...]:
        return self.modes if self.modes is not None else ENGINE_MODES.get(self.target.runtime, MODES)


def validate(config: LayersConfig) -> None:
    """Refuse what cannot be honoured before any model is built."""
    config.spec.validate()
    config.target.validate()
    check_comparable(config)


def check_comparable(config: LayersConfig) -> None:
    """The target and modes can be compared module by module (a RuntimeUnavailableError says why not); also checked
    by ``layers_document`` itself, which ``run --layers-on-fail`` calls with run's already validated target."""
    modes = config.effective_modes
    if not modes or any(mode not in MODES for mode in modes) or len(set(modes)) != len(modes):
        raise UsageError(f"--mode {','.join(modes) or '(none)'}: choose chained, isolated or both")
    runtime = config.target.runtime
    if runtime not in SUPPORTED_RUNTIMES:
        instead = ("`accelport layers --runtime openvino` or `onnxruntime` with --dtype int8 (their quantised "
                   "graphs keep module names; eager has no int8 engine)" if config.target.dtype in QUANTIZED_DTYPES
                   else "`accelport layers --runtime eager` on the same device and dtype")
        raise RuntimeUnavailableError(
            f"--runtime {runtime}: `accelport layers` supports PyTorch eager, OpenVINO and ONNX Runtime targets "
            "(--runtime eager, openvino or onnxruntime). A compiled Inductor graph runs the model as a whole: its "
            "intermediate tensors are fused into kernels that do not map back to modules, and hooking the underlying "
            f"eager modules would compare a different program. Run {instead} to localise numeric error, or an engine "
            "whose graph keeps module names; see docs/layers.md.")
    unsupported = [mode for mode in modes if mode not in ENGINE_MODES[runtime]]
    if unsupported:
        raise RuntimeUnavailableError(
            f"--mode {unsupported[0]} --runtime {runtime}: an engine's program runs as a whole and cannot be fed the "
            f"reference's input at one module; use --mode chained (its default for {runtime})")
    if config.target.dtype in QUANTIZED_DTYPES and runtime == "eager":
        raise RuntimeUnavailableError(
            f"--dtype {config.target.dtype} --runtime eager: eager has no int8 engine; `accelport layers` compares a "
            "quantised target module by module on --runtime openvino (NNCF's model) or onnxruntime (its QDQ "
            "model): both keep the module names, so their tensors at module boundaries can be read; see "
            "docs/int8.md.")
