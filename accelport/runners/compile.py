"""TorchInductor-compiled model: frozen weights on CPU, CUDA graphs on CUDA; ``describe()["compile_path"]`` says which.

CPU, two routes to the same Inductor C++ code, with ``freezing`` (weights folded as constants, batch norms folded
into convolutions, convolution and linear weights pre-packed for oneDNN with their activations and residual adds
fused) and one static graph per input shape. Freezing happens only if Inductor's ``freezing`` is on while Dynamo
traces and gradients are off while Inductor compiles (``frozen_inductor``); ``torch.compile(options={"freezing":
True})`` alone reaches Inductor but not Dynamo, which then lifts every parameter to a graph input, and nothing is
folded or packed (accelport did that until measured: docs/benchmarks.md "Freezing that froze nothing"):
- ``torch.export`` + AOTInductor: packaged as a ``.pt2`` file in the accelport cache (keyed by model, weights
  digest, settings, thread count, CPU ISA and library versions: the generated code bakes in the OpenMP team
  size and the ISA), loaded in about a second by a later process; runs through Inductor's C++ wrapper.
- ``torch.compile`` with freezing: Dynamo graph breaks allowed (models ``torch.export`` rejects);
  no accelport cache: Inductor's FX graph cache (``TORCHINDUCTOR_CACHE_DIR``) bypasses a frozen graph (its packed
  oneDNN weights do not pickle), so a later process traces, freezes and generates code again, and only the C++
  build comes from Inductor's code cache (convnextv2_atto: 9 s instead of 24 s).
AOTInductor comes first (``cpu_plan``), and bf16/fp16 run with the model cast to the dtype, not under
``torch.autocast`` (comment on ``_CPU_ROUTES``).

CUDA: ``torch.compile(mode="reduce-overhead")`` (CUDA graphs: one launch per batch, the batch-1 win), the model
cast to the dtype (GPUs have bf16/fp16 arithmetic), warm-up runs per shape in setup; the compiler's cache
artifacts are saved in the accelport cache so a fresh machine can reuse them. Not exercised here (no GPU).
XPU: ``torch.compile`` default mode. Other devices: not supported by Inductor here; a clear error. Ascend NPU
(documented, unverified): torch_npu's ``torchair`` backend
(``torch.compile(model, backend=torchair.get_npu_backend(compiler_config=config))``, its "reduce-overhead" mode
for NPU graph capture) plays this role there; accelport does not run it yet.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import inspect
import logging
import time
import warnings
from collections.abc import Iterator
from typing import Any

import torch

from ..environment import cpu_isa
from ..errors import RuntimeUnavailableError
from .base import DTYPES, INPUT_DTYPES, Runner
from .cache import CacheEntry, cache_entry, default_cache_dir, library_versions, model_identity
from .quantize import PT2E_QUANTIZER, CalibrationSource, export_pt2e_int8, pt2e_cache_fields, warn_of_scales_at_floor
from .routes import first_working_route

_logger = logging.getLogger(__name__)

_TORCH_COMPILE_MODE = {"cuda": "reduce-overhead", "xpu": "default"}
CUDA_GRAPH_WARMUP_RUNS = 3  # cudagraph trees record on the second or third call of a shape
RECOMPILE_LIMIT = 64  # compiled runners of one model class share Dynamo's per-code-object cache (default 8)


def check_inductor_device(device: torch.device, who: str) -> None:
    """Inductor generates code for the CPU and the devices of ``_TORCH_COMPILE_MODE`` only (an Ascend NPU needs
    torch_npu's own backend, torchair): elsewhere ``who`` is refused as unsupported up front, not after a lowering
    error."""
    if device.type != "cpu" and device.type not in _TORCH_COMPILE_MODE:
        raise RuntimeUnavailableError(f"{who} --device {device}: Inductor supports cpu, "
                                      f"{', '.join(_TORCH_COMPILE_MODE)} here; use --runtime eager on this device")

# CPU: the Inductor routes in order of preference, bf16/fp16 with the model cast to the dtype (not autocast: weights
# fp32, convolutions and matmuls in the dtype, fp32 element-wise kernels between them); chosen by measurement
# (docs/benchmarks.md "The compile runner's path", benchmarks/compile_paths.py, paired rounds):
# - AMX Xeon, frozen for real: autocast on par with the cast (0.996-1.004 over 9 rounds at bf16 batch 1 and 32;
#   0.92-0.93 over 5 rounds in the host's slow mode), with the same outputs (Inductor computes bf16 element-wise
#   work in fp32 either way); torch.compile 1.09-1.16x slower than AOTInductor except bf16 batch 32 (0.94).
# - AVX-512 BF16 EPYC (Zen 5), frozen: this runner against the frozen torch.compile + autocast peer, one sweep,
#   3 rounds: 0.790 at bf16 batch 1, 1.042 at batch 32; a 6-round probe at batch 32, torch.compile cast against
#   autocast: 1.004 (docs/benchmarks.md "Run 4, on a Zen 5").
# - Before the freezing fix (nothing frozen), autocast was 1.27-1.68x slower at batch 1 on AVX2, AVX-512 BF16 and
#   AMX CPUs; AVX2 is not re-measured frozen.
# The package also loads from the cache in about a second.
_CPU_ROUTES = ("aot-inductor", "torch.compile")
_ROUTE_NAMES = {"aot-inductor": "AOTInductor", "torch.compile": "torch.compile"}


def frozen_inductor() -> contextlib.ExitStack:
    """Real Inductor freezing for the tracing and compiling done inside: the ``freezing`` flag for Dynamo (which
    otherwise lifts parameters to graph inputs that Inductor cannot fold) and no gradients (Inductor freezes only
    then). Enter it around a compiled module's first call per shape, or around AOTInductor's compile."""
    stack = contextlib.ExitStack()
    stack.enter_context(torch.no_grad())
    stack.enter_context(torch._inductor.config.patch(freezing=True))
    stack.enter_context(warnings.catch_warnings())
    # torch 2.14's int8 lowering copies each weight zero point with torch.tensor(tensor): a warning per layer, about
    # torch's own code, which the user can do nothing about
    warnings.filterwarnings("ignore", message="To copy construct from a tensor", category=UserWarning,
                            module=r"torch\._inductor\.mkldnn_lowerings")
    stack.enter_context(row_major_qlinear_addend())
    return stack


# torch 2.14's Inductor lowers an int8 linear followed by a residual add to oneDNN's qlinear with a binary "add"
# post-op, and requires the addend in row-major order only for the in-place "sum" variant. A residual that arrives
# transposed (MobileViT's unfolded patches) reached oneDNN column-major, where each such call took 127 ms instead
# of ~0.3 ms: the int8 package of mobilevit_xxs ran 218 ms a batch-1 image against 9.5 ms with the addend made
# row-major (identical outputs; docs/int8.md "Why compile int8 of MobileViT was 20x slow"). The fix asks for the same
# stride order as "sum" does; a torch whose helper differs is left alone.
QLINEAR_ADDEND_FIX = "qlinear binary add: addend row-major"


def _linear_fusion_helper() -> Any:
    """Inductor's helper that the fix wraps, or None on a torch where it is not the one this was written for."""
    from torch._inductor import mkldnn_ir

    helper = getattr(mkldnn_ir, "_prepare_linear_fusion_create", None)
    if helper is None or list(inspect.signature(helper).parameters)[-2:] != ["other", "binary_sum"]:
        return None
    return helper


@contextlib.contextmanager
def row_major_qlinear_addend() -> Iterator[None]:
    """Inside, Inductor lowers every int8 linear + add with the addend in row-major order (nothing changes on a
    torch whose helper differs: ``_linear_fusion_helper``)."""
    from torch._inductor import mkldnn_ir

    original = _linear_fusion_helper()
    if original is None:
        _logger.debug("Inductor's linear fusion helper is not the expected one: the qlinear addend fix is off")
        yield
        return

    def row_major_addend(cls: Any, x: Any, weight: Any, bias: Any, quantize_args: Any = None, other: Any = None,
                         binary_sum: bool = False) -> Any:
        return original(cls, x, weight, bias, quantize_args, other, binary_sum or other is not None)

    mkldnn_ir._prepare_linear_fusion_create = row_major_addend
    try:
        yield
    finally:
        mkldnn_ir._prepare_linear_fusion_create = original


# Inductor's pattern counters for a convolution or linear whose weights freezing packed for oneDNN (fp32/bf16/fp16)
# or lowered to oneDNN's int8 qconv/qlinear (PT2E); each such op counts once. The freezing passes run before
# Inductor's FX graph cache lookup, so they count on every compile (a frozen graph holding packed oneDNN weights is
# not cached anyway: "mkldnn tensors unpickleable").
_PACKED_WEIGHT_COUNTERS = ("mkldnn_conv_weight_pack_matcher_count", "mkldnn_linear_weight_pack_matcher_count",
                           "qconv_unary_lower_count", "qconv2d_binary_lower_count", "qlinear_unary_lower_count",
                           "qlinear_binary_lower_count")


def packed_weight_ops() -> int:
    """Convolutions and linears packed (or int8-lowered) by Inductor's freezing in this process so far. The
    difference over a compile is the proof that it froze: 0 for a model with convolutions means it did not."""
    from torch._dynamo.utils import counters

    return sum(counters["inductor"][name] for name in _PACKED_WEIGHT_COUNTERS)


def int8_float_remainder(isa: dict[str, Any] | None = None) -> str:
    """The dtype of the float work between PT2E's int8 convolutions and linears on this CPU (``isa``:
    ``cpu_isa()``): bf16 where the CPU multiplies bf16 in hardware (AMX-BF16 or AVX-512 BF16), fp32 elsewhere (on
    AVX2 bf16 is emulated through fp32 conversions). Measured with frozen packages of convnextv2_atto, paired with
    eager fp32 in one process (docs/int8.md "The float remainder in bf16"): AMX Xeon, batch 32 0.242 against 0.477
    with fp32, batch 1 0.377 against 0.412; AVX-512 BF16 EPYC (Zen 5), batch 32 0.589x the fp32 remainder's time,
    batch 1 1.027x (a null pair: 1.010); cosine to fp32 0.99972-0.99975 either way."""
    isa = isa if isa is not None else cpu_isa()
    return "bf16" if isa.get("bf16_arithmetic") else "fp32"


def cpu_plan(dtype: str) -> tuple[str, ...]:
    """The Inductor routes for ``dtype`` on a CPU, in order of preference."""
    if dtype == "int8":  # only the PT2E-quantised package: a float torch.compile would not be int8
        return ("aot-inductor",)
    return _CPU_ROUTES


def raise_recompile_limit() -> None:
    """Several compiled copies of one model in a process (a bench sweep: every dtype, layout and peer recipe)
    each add a Dynamo cache entry for the same ``forward``; past the limit Dynamo silently runs eager."""
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, RECOMPILE_LIMIT)


class CompiledRunner(Runner):
    name = "compile"
    uses_torch_threads = True  # Inductor bakes the count into its OpenMP code (prepare runs at it)
    options = frozenset({"calibration"})  # --dtype int8: the PT2E quantizer's calibration images

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._calibration = CalibrationSource(self.option_values["calibration"])
        if self.dtype == "int8" and self.device.type != "cpu":
            raise RuntimeUnavailableError(f"--runtime compile --dtype int8 --device {self.device}: the PT2E int8 "
                                          "flow here is the X86 Inductor quantizer (CPU); use --device cpu")
        check_inductor_device(self.device, "--runtime compile")
        on_cpu = self.device.type == "cpu"
        self._routes = cpu_plan(self.dtype) if on_cpu else ()
        self._mode = self._routes[0] if on_cpu else f"torch.compile:{_TORCH_COMPILE_MODE[self.device.type]}"
        self._int8_remainder = int8_float_remainder() if self.dtype == "int8" else None
        self._compiled_by_shape: dict[tuple[int, ...], Any] = {}
        self._padded_into: dict[tuple[int, ...], tuple[int, ...]] = {}  # int8: a smaller batch -> its package
        self._scales_at_floor: dict[str, Any] | None = None  # int8: calibration's ranges under the quantizer's floor
        self._identity: dict[str, Any] | None = None

    @property
    def _memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format

    @property
    def compile_path(self) -> str:
        """What the runner does, in words, for summary.json (e.g. "AOTInductor, freezing, channels-last,
        model cast to bf16")."""
        route = self._mode.split(":")[0]
        steps = [_ROUTE_NAMES.get(route, route)]
        if self.device.type == "cpu":
            steps.append("freezing")
        else:
            steps.append(f"mode={self._mode.split(':')[1]}" + (" (CUDA graphs)" if self.device.type == "cuda" else ""))
        steps.append("channels-last" if self.channels_last else "contiguous")
        if self.dtype == "int8":
            fix = f", {QLINEAR_ADDEND_FIX}" if _linear_fusion_helper() is not None else ""
            steps.append(f"PT2E int8 (oneDNN qconv/qlinear{fix}), float remainder in {self._int8_remainder}")
        elif self.dtype != "fp32":
            steps.append(f"model cast to {self.dtype}")
        return ", ".join(steps)

    def _prepare_impl(self) -> None:
        module = copy.deepcopy(self.model).eval()
        self._module = module.to(self.device, INPUT_DTYPES[self.dtype]).to(memory_format=self._memory_format)
        self._identity = model_identity(self.model)
        if self.device.type != "cpu":
            self._artifacts = self._cache_entry({"artifacts": "torch.compiler"}, ".bin")
            if self._artifacts.hit:
                torch.compiler.load_cache_artifacts(self._artifacts.path.read_bytes())
            raise_recompile_limit()
            self._compiled = torch.compile(self._module, mode=_TORCH_COMPILE_MODE[self.device.type], dynamic=False)

    def _cache_entry(self, extra: dict[str, Any], suffix: str) -> CacheEntry:
        fields = {**(self._identity or {}), "runtime": self.name, "mode": self._mode, "dtype": self.dtype,
                  "channels_last": self.channels_last, "device_type": self.device.type,
                  "freezing": "traced and compiled frozen" if self.device.type == "cpu" else False,
                  "allow_tf32": [torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32],
                  # oneDNN packs frozen weights in a layout of the ISA it found (AMX tiles or not): both in the key
                  "cpu_capability": torch.backends.cpu.get_cpu_capability(), "cpu_isa": cpu_isa()["name"],
                  "threads": torch.get_num_threads(),
                  **extra,
                  **library_versions("torch", "timm")}
        return cache_entry(self.cache_dir, "inductor", fields, suffix)

    def _prepare_shape_impl(self, device_input: torch.Tensor) -> dict[str, Any]:
        shape = tuple(device_input.shape)
        larger = self._int8_package_to_pad_into(shape)
        if larger is not None:
            self._compiled_by_shape[shape] = functools.partial(self._padded_call, self._compiled_by_shape[larger],
                                                               larger[0])
            self._padded_into[shape] = larger
            return {"mode": self._mode, "padded_into": list(larger)}
        if self.device.type == "cpu":
            attempts = {"aot-inductor": functools.partial(self._load_or_build_package, shape, device_input),
                        "torch.compile": functools.partial(self._compile_in_process, shape, device_input)}
            chosen = first_working_route([(route, attempts[route]) for route in self._routes],
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

    def _int8_package_to_pad_into(self, shape: tuple[int, ...]) -> tuple[int, ...] | None:
        """int8: the shape of an already built package that a smaller batch of the same image size runs in, zero-
        padded. Each package is calibrated on its own batches, so a second one (a run's last, partial batch) would be
        a second quantisation, and one run would judge two int8 programs."""
        if self.dtype != "int8":
            return None
        return min((built for built in self._compiled_by_shape
                    if built not in self._padded_into and built[1:] == shape[1:] and built[0] > shape[0]), default=None)

    def _padded_call(self, compiled: Any, batch_size: int, device_input: torch.Tensor) -> torch.Tensor:
        """``device_input``'s images run in a package of ``batch_size`` (zeros after them), their outputs only:
        inference treats each image on its own (static int8 scales, no batch statistics)."""
        padding = device_input.new_zeros((batch_size - device_input.shape[0], *device_input.shape[1:]))
        output = compiled(torch.cat([device_input, padding]).contiguous(memory_format=self._memory_format))
        output = output[0] if isinstance(output, (list, tuple)) else output
        return output[: device_input.shape[0]]

    def _compile_in_process(self, shape: tuple[int, ...], device_input: torch.Tensor) -> dict[str, Any]:
        """``torch.compile`` with freezing (Dynamo graph breaks are allowed, so it also takes models
        ``torch.export`` cannot); a later process traces, freezes and generates code again (Inductor's FX graph
        cache bypasses frozen graphs), and only the C++ build comes from Inductor's code cache."""
        started, packed_before = time.perf_counter(), packed_weight_ops()
        raise_recompile_limit()
        compiled = torch.compile(self._module, dynamic=False)
        # under inference mode, as ``_forward_impl`` calls it: Dynamo guards the input's dispatch keys (inference
        # mode drops the autograd key), so a graph traced under no_grad alone was traced again at the first timed
        # call, outside freezing, and ran unfrozen
        with frozen_inductor(), torch.inference_mode():
            compiled(device_input)
        self._compiled_by_shape[shape] = compiled
        return {"mode": "torch.compile:freezing", "compile_s": round(time.perf_counter() - started, 4),
                "packed_weight_ops": packed_weight_ops() - packed_before}

    def _load_or_build_package(self, shape: tuple[int, ...], device_input: torch.Tensor) -> dict[str, Any]:
        calibration = self._calibration.load(self.model, shape[1:]) if self.dtype == "int8" else None
        entry = self._cache_entry({"input_shape": list(shape), **({**pt2e_cache_fields(calibration),
                                                                    "int8_float_remainder": self._int8_remainder,
                                                                    "inductor_fixes": [QLINEAR_ADDEND_FIX]
                                                                    if _linear_fusion_helper() else []}
                                                                   if calibration else {})}, ".pt2")
        details: dict[str, Any] = {"mode": self._mode, "package_cache_hit": entry.hit, "package": str(entry.path)}
        notes: dict[str, Any] = {}
        if not entry.hit:
            started = time.perf_counter()
            example = torch.zeros(shape, dtype=INPUT_DTYPES[self.dtype]).to(memory_format=self._memory_format)
            with torch.no_grad():
                if calibration:
                    exported, notes["int8_scales_at_floor"] = export_pt2e_int8(
                        self._module, example, calibration, self._memory_format, DTYPES[self._int8_remainder or "fp32"])
                else:
                    exported = torch.export.export(self._module, (example,))
            details["export_s"] = round(time.perf_counter() - started, 4)
            started, packed_before = time.perf_counter(), packed_weight_ops()
            with frozen_inductor():
                entry.produce(lambda path: torch._inductor.aoti_compile_and_package(exported, package_path=str(path)),
                              notes=lambda: notes)
            details["compile_s"] = round(time.perf_counter() - started, 4)
            details["packed_weight_ops"] = packed_weight_ops() - packed_before
        elif calibration:  # what calibration found is said again, from the note kept with the package
            notes = entry.notes
            warn_of_scales_at_floor(notes.get("int8_scales_at_floor"))
        if calibration:
            self._scales_at_floor = details["int8_scales_at_floor"] = notes.get("int8_scales_at_floor")
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
        built = [shape for shape in self._compiled_by_shape if shape not in self._padded_into]
        return {"compile_path": self.compile_path, "compile_mode": self._mode,
                "freezing": self.device.type == "cpu",
                "torch_threads": torch.get_num_threads(), "static_shapes": [list(s) for s in built],
                "cache_dir": str(self.cache_dir or default_cache_dir()),
                "recompiles": max(0, len(built) - 1),
                **({**self._calibration.to_json(), "quantizer": PT2E_QUANTIZER,
                    "int8_float_remainder": self._int8_remainder, "int8_scales_at_floor": self._scales_at_floor,
                    "padded_into": {str(list(small)): list(large) for small, large in self._padded_into.items()}}
                   if self.dtype == "int8" else {})}

    def _close_impl(self) -> None:
        self._compiled_by_shape.clear()
        self._padded_into.clear()
        self.__dict__.pop("_compiled", None)
        del self._module
