"""TorchInductor-compiled model: frozen weights on CPU, CUDA graphs on CUDA.

CPU: ``torch.export`` + AOTInductor with ``freezing`` (weights folded as constants and pre-packed for oneDNN),
one static graph per input shape, packaged as a ``.pt2`` file in the accelport cache. The generated code
is specific to the thread count (OpenMP team size) and CPU ISA, so both are in the cache key. Why AOTInductor rather
than ``torch.compile``: both generate the same Inductor C++ code, but with freezing on, ``torch.compile``
bypasses Inductor's FX graph cache (counter ``fxgraph_cache_bypass``), so every process would pay the whole
compilation again; a package keyed by model, weights digest, settings and library versions loads in
about a second. It also runs through Inductor's C++ wrapper, without Python per-kernel overhead.

CUDA: ``torch.compile(mode="reduce-overhead")`` (CUDA graphs: one launch per batch, the batch-1 win), warm-up
runs per shape in setup; Inductor's own on-disk caches apply (no freezing there), and the compiler's cache
artifacts are also saved in the accelport cache so a fresh machine can reuse them. XPU: ``torch.compile``
default mode. Other devices (e.g. Ascend NPU): not supported by Inductor here; a clear error.
"""

from __future__ import annotations

import copy
import functools
import logging
import time
from typing import Any

import torch

from ..errors import RuntimeUnavailableError
from .base import INPUT_DTYPES, Runner
from .cache import CacheEntry, cache_entry, default_cache_dir, library_versions, model_identity
from .quantize import PT2E_QUANTIZER, CalibrationSource, export_pt2e_int8, pt2e_cache_fields
from .routes import first_working_route

_logger = logging.getLogger(__name__)

_TORCH_COMPILE_MODE = {"cuda": "reduce-overhead", "xpu": "default"}
CUDA_GRAPH_WARMUP_RUNS = 3  # cudagraph trees record on the second or third call of a shape


class CompiledRunner(Runner):
    name = "compile"

    def __init__(self, *args: Any, calibration: tuple[str, ...] | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._calibration = CalibrationSource(calibration)  # --dtype int8: the PT2E quantizer's calibration images
        if self.dtype == "int8" and self.device.type != "cpu":
            raise RuntimeUnavailableError(f"--runtime compile --dtype int8 --device {self.device}: the PT2E int8 "
                                          "flow here is the X86 Inductor quantizer (CPU); use --device cpu")
        if self.device.type != "cpu" and self.device.type not in _TORCH_COMPILE_MODE:
            raise RuntimeUnavailableError(f"--runtime compile --device {self.device}: Inductor supports cpu, "
                                          f"{', '.join(_TORCH_COMPILE_MODE)} here; use --runtime eager on this device")
        on_cpu = self.device.type == "cpu"
        self._mode = "aot-inductor" if on_cpu else f"torch.compile:{_TORCH_COMPILE_MODE[self.device.type]}"
        self._compiled_by_shape: dict[tuple[int, ...], Any] = {}
        self._identity: dict[str, Any] | None = None

    @property
    def _memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format

    def _prepare_impl(self) -> None:
        if self.threads != torch.get_num_threads():
            # Inductor's CPU code is generated for torch's thread count (OpenMP team size baked in), so the
            # count must be the runner's before compiling; process-wide, like torch's own setting.
            torch.set_num_threads(self.threads)
        module = copy.deepcopy(self.model).eval()
        self._module = module.to(self.device, INPUT_DTYPES[self.dtype], memory_format=self._memory_format)
        self._identity = model_identity(self.model)
        if self.device.type != "cpu":
            self._artifacts = self._cache_entry({"artifacts": "torch.compiler"}, ".bin")
            if self._artifacts.hit:
                torch.compiler.load_cache_artifacts(self._artifacts.path.read_bytes())
            self._compiled = torch.compile(self._module, mode=_TORCH_COMPILE_MODE[self.device.type], dynamic=False)

    def _cache_entry(self, extra: dict[str, Any], suffix: str) -> CacheEntry:
        fields = {**(self._identity or {}), "runtime": self.name, "mode": self._mode, "dtype": self.dtype,
                  "channels_last": self.channels_last, "device_type": self.device.type,
                  "freezing": self.device.type == "cpu",
                  "allow_tf32": [torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32],
                  "cpu_capability": torch.backends.cpu.get_cpu_capability(), "threads": torch.get_num_threads(),
                  **extra,
                  **library_versions("torch", "timm")}
        return cache_entry(self.cache_dir, "inductor", fields, suffix)

    def _prepare_shape_impl(self, device_input: torch.Tensor) -> dict[str, Any]:
        shape = tuple(device_input.shape)
        if self.device.type == "cpu":
            chosen = first_working_route(
                [("aot-inductor", functools.partial(self._load_or_build_package, shape, device_input)),
                 ("torch.compile", functools.partial(self._compile_in_process, shape, device_input))]
                [:1 if self.dtype == "int8" else None],  # int8 only through the quantised package
                f"--runtime compile: {type(self.model).__name__} in {self.dtype}")
            self._mode = chosen.route if chosen.route != "torch.compile" else "torch.compile:freezing"
            return {**chosen.value, **chosen.to_json()}
        started = time.perf_counter()
        loaded_from_cache = self._artifacts.hit
        with torch.inference_mode():
            for _ in range(CUDA_GRAPH_WARMUP_RUNS):
                self._compiled(device_input)
        self.synchronize()
        saved = torch.compiler.save_cache_artifacts()
        if saved is not None:
            self._artifacts.produce(lambda path: path.write_bytes(saved[0]))
        self._compiled_by_shape[shape] = self._compiled
        return {"mode": self._mode, "compile_and_capture_s": round(time.perf_counter() - started, 4),
                "artifacts_cache_hit": loaded_from_cache}

    def _compile_in_process(self, shape: tuple[int, ...], device_input: torch.Tensor) -> dict[str, Any]:
        """The fallback when ``torch.export`` cannot take the model: ``torch.compile`` (Dynamo graph breaks are
        allowed there) with the same freezing; not packaged, so each process compiles again."""
        started = time.perf_counter()
        compiled = torch.compile(self._module, dynamic=False, options={"freezing": True})
        with torch.inference_mode():
            compiled(device_input)
        self._compiled_by_shape[shape] = compiled
        return {"mode": "torch.compile:freezing", "compile_s": round(time.perf_counter() - started, 4)}

    def _load_or_build_package(self, shape: tuple[int, ...], device_input: torch.Tensor) -> dict[str, Any]:
        calibration = self._calibration.load(self.model, shape[1:]) if self.dtype == "int8" else None
        entry = self._cache_entry({"input_shape": list(shape), **(pt2e_cache_fields(calibration) if calibration
                                                                  else {})}, ".pt2")
        details: dict[str, Any] = {"mode": self._mode, "package_cache_hit": entry.hit, "package": str(entry.path)}
        if not entry.hit:
            started = time.perf_counter()
            example = torch.zeros(shape, dtype=INPUT_DTYPES[self.dtype]).to(memory_format=self._memory_format)
            with torch.no_grad():
                exported = (export_pt2e_int8(self._module, example, calibration, self._memory_format) if calibration
                            else torch.export.export(self._module, (example,)))
            details["export_s"] = round(time.perf_counter() - started, 4)
            started = time.perf_counter()
            entry.produce(lambda path: torch._inductor.aoti_compile_and_package(
                exported, package_path=str(path), inductor_configs={"freezing": True}))
            details["compile_s"] = round(time.perf_counter() - started, 4)
        started = time.perf_counter()
        loaded = torch._inductor.aoti_load_package(str(entry.path))
        with torch.inference_mode():
            loaded(device_input)  # a package that loads but cannot run counts as this route's failure
        self._compiled_by_shape[shape] = loaded
        details["load_s"] = round(time.perf_counter() - started, 4)
        _logger.info("compile %s %s %s: %s", self.dtype, list(shape),
                     "cache hit" if details["package_cache_hit"] else "compiled", details)
        return details

    def _to_device_impl(self, batch: torch.Tensor) -> torch.Tensor:
        return batch.to(self.device, INPUT_DTYPES[self.dtype], memory_format=self._memory_format)

    @torch.inference_mode()
    def _forward_impl(self, device_input: torch.Tensor) -> torch.Tensor:
        return self._compiled_by_shape[tuple(device_input.shape)](device_input)

    def _to_host_impl(self, device_output: Any) -> torch.Tensor:
        output = device_output[0] if isinstance(device_output, (list, tuple)) else device_output
        return output.detach().to("cpu", torch.float32)  # a copy: CUDA graphs reuse their output buffers

    def _describe_impl(self) -> dict[str, Any]:
        return {"compile_mode": self._mode, "freezing": self.device.type == "cpu",
                "torch_threads": torch.get_num_threads(), "static_shapes": [list(s) for s in self._compiled_by_shape],
                "cache_dir": str(self.cache_dir or default_cache_dir()),
                "recompiles": max(0, len(self._compiled_by_shape) - 1),
                **({**self._calibration.to_json(), "quantizer": PT2E_QUANTIZER} if self.dtype == "int8" else {})}

    def _close_impl(self) -> None:
        self._compiled_by_shape.clear()
        self.__dict__.pop("_compiled", None)
        del self._module
