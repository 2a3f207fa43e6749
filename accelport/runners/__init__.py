"""Runners by name. Each runtime lives in its own module, imported only when asked for."""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch

from ..errors import RuntimeUnavailableError, UsageError
from .base import DTYPES, INPUT_DTYPES, QUANTIZED_DTYPES, Runner

# name -> (module, class, the pip package whose absence makes it unavailable)
_REGISTRY: dict[str, tuple[str, str, str | None]] = {
    "eager": ("accelport.runners.eager", "EagerRunner", None),
    "compile": ("accelport.runners.compile", "CompiledRunner", None),
    "onnxruntime": ("accelport.runners.onnxruntime", "OnnxRuntimeRunner", "onnxruntime onnx"),
    "openvino": ("accelport.runners.openvino", "OpenVinoRunner", "openvino onnx"),
}


def runtime_names() -> list[str]:
    return list(_REGISTRY)


def check_runtimes_and_dtypes(runtimes: tuple[str, ...], dtypes: tuple[str, ...],
                              allowed: Iterable[str] = DTYPES) -> None:
    """A sweep's --runtimes and --dtypes (``allowed``: the float dtypes, or those and int8 where the command
    quantises), checked before any work: the first unknown one is a UsageError that lists the choices."""
    for runtime in runtimes:
        if runtime not in _REGISTRY:
            raise UsageError(f"--runtimes {runtime!r}: choose from {', '.join(_REGISTRY)}")
    allowed = tuple(allowed)
    for dtype in dtypes:
        if dtype not in allowed:
            raise UsageError(f"--dtypes {dtype!r}: choose from {', '.join(allowed)}")


def check_sweep_calibration(dtypes: tuple[str, ...], calibration: tuple[str, ...]) -> None:
    """A sweep's --calibration (bench, zoo), checked before any work: it needs a quantised dtype in --dtypes, and
    with one, a missing path or an empty folder is a UsageError/InputError now, not after the models' exports."""
    if any(dtype in QUANTIZED_DTYPES for dtype in dtypes):
        from .quantize import discover_calibration

        discover_calibration(calibration)
    elif calibration:
        raise UsageError(f"--calibration applies to a quantised dtype in --dtypes ({', '.join(QUANTIZED_DTYPES)}) only")


def _runner_class(runtime: str) -> type[Runner]:
    module_name, class_name, package = _REGISTRY[runtime]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise RuntimeUnavailableError(f"--runtime {runtime}: needs {package} (pip install {package}): {exc}") from None
    return getattr(module, class_name)


def runner_supports_streams(runtime: str) -> bool:
    """Whether ``runtime`` can split a batch over parallel streams (False when its engine is not installed)."""
    try:
        return "streams" in _runner_class(runtime).options
    except RuntimeUnavailableError:
        return False


def create_runner(
    runtime: str, model: torch.nn.Module, device: torch.device, dtype: str = "fp32", channels_last: bool = False,
    **options: Any,
) -> Runner:
    """Look up ``runtime`` and build its runner; a missing engine is a clear 'install X' error.

    ``options`` go to the runner (``threads``, ``cache_dir``, and the runtime-specific ones of ``base.OPTIONS``
    such as ``streams`` or ``calibration``, refused by a runtime that does not take them); an unsupported
    dtype/flag/device combination is a RuntimeUnavailableError raised here, before any work.
    """
    if runtime not in _REGISTRY:
        raise UsageError(f"--runtime {runtime!r}: choose one of {', '.join(_REGISTRY)}")
    if dtype not in INPUT_DTYPES:
        raise UsageError(f"--dtype {dtype!r}: choose one of {', '.join(INPUT_DTYPES)}")
    if dtype in QUANTIZED_DTYPES:
        from .quantize import check_quantizes

        check_quantizes(runtime, dtype)
    return _runner_class(runtime)(model, device, dtype=dtype, channels_last=channels_last, **options)


def infer_all(runner: Runner, batches: Iterable[torch.Tensor]) -> np.ndarray:
    """Outputs for every image; ``batches`` are decoded one at a time, so memory holds one batch of inputs."""
    return torch.cat([runner.infer(batch) for batch in batches]).numpy()


__all__ = ["DTYPES", "INPUT_DTYPES", "QUANTIZED_DTYPES", "Runner", "check_runtimes_and_dtypes", "create_runner",
           "infer_all", "runner_supports_streams", "runtime_names"]
