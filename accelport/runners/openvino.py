"""OpenVINO on CPU: the cached ONNX export, reshaped to a static batch, compiled with a precision hint.

``INFERENCE_PRECISION_HINT`` follows ``--dtype`` (f32 / bf16 / f16), and the precision the compiled model
actually uses is READ BACK and recorded. OpenVINO silently runs bf16 on CPUs with AMX/AVX512-BF16 unless told
f32, and silently falls back to f32 where bf16/f16 is not supported: either way the requested precision would
be a lie, so a mismatch is a clear error, never a bf16 run reported as fp32 (or the reverse).

Threads: ``INFERENCE_NUM_THREADS`` = the runner's thread count. With one stream (the default) that is
``PERFORMANCE_HINT=LATENCY``: every thread works on each request. With ``streams`` > 1 the threads are shared
among that many OpenVINO execution streams (OpenVINO's own throughput mode). Each batch is run as asynchronous
infer requests: one per stream by default, or requests of at most ``micro_batch`` images, queued on the
streams. Fewer threads per operation (less synchronisation) and smaller requests (activations that stay in
cache) can both beat one request of the whole batch on a few cores; ``accelport bench`` measures which.
Compiled blobs are cached by OpenVINO itself (``CACHE_DIR`` under the accelport cache). ``forward`` returns after
the outputs are written (it waits for every part), so ``synchronize()`` has nothing to wait for.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import openvino as ov
import torch

from ..atomic import write_json_atomic
from ..errors import RuntimeUnavailableError, UsageError
from .base import INT8_REMAINDERS, Runner, request_count
from .cache import default_cache_dir
from .graph_ops import GraphOp, openvino_ops
from .graph_rewrites import rewrites_for
from .onnx_export import EXPORTERS, export_onnx, onnx_cache_entry
from .openvino_convert import convert_pytorch, ir_cache_entry
from .quantize import CalibrationSource, openvino_int8_layers, quantize_openvino, transformer_style
from .routes import first_working_route

_logger = logging.getLogger(__name__)

TRIAL_SCRIPT = Path(__file__).with_name("openvino_trial.py")  # run in a child before an int8 model runs here
_HINT = {"fp32": "f32", "bf16": "bf16", "fp16": "f16", "int8": "f32"}  # int8: NNCF's graph; the rest stays f32
_FROM_OV = {"f32": "fp32", "bf16": "bf16", "f16": "fp16"}
_CAPABILITY = {"bf16": "BF16", "fp16": "FP16", "int8": "INT8"}


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _float_precision(compiled: Any) -> str:
    """The float precision a compiled model really computes in, read back (fp32, bf16, fp16 or "unknown")."""
    return _FROM_OV.get(compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name(), "unknown")


@functools.lru_cache(maxsize=1)
def shared_core() -> ov.Core:
    """One OpenVINO Core for the whole process, never destroyed.

    Each Core's CPU plugin installs a signal alternate stack on the thread that creates it and, when destroyed,
    frees it and re-installs the one it found. Cores destroyed out of creation order therefore leave a freed
    alternate stack installed, and the next signal handled on that thread crashes the process (seen here:
    SIGSEGV on the SIGCHLD of a DataLoader worker, after a bench sweep had created and dropped several
    runners). One long-lived Core avoids that; settings that differ per runner go to ``compile_model``.
    """
    return ov.Core()


def split_bounds(batch_size: int, parts: int) -> list[tuple[int, int]]:
    """``[start, stop)`` slices of a batch into ``parts`` requests (fewer when the batch is smaller), sizes within
    one of each other."""
    parts = max(1, min(parts, batch_size))
    size, extra = divmod(batch_size, parts)
    bounds, start = [], 0
    for index in range(parts):
        stop = start + size + (index < extra)
        bounds.append((start, stop))
        start = stop
    return bounds


class OpenVinoRunner(Runner):
    name = "openvino"
    # requests of a batch, queued on parallel execution streams; --dtype int8: nncf.quantize's calibration images
    # --int8-remainder: the precision of the float work between NNCF's int8 layers (f32 by default; bf16 was 14 %
    # faster at batch 32 on a Zen 5, slower at batch 1 and on the AMX Xeon: docs/int8.md, so bench measures both)
    options = frozenset({"streams", "micro_batch", "calibration", "int8_remainder"})
    rewrite_graph = True  # export a copy with LayerNorm2d over the channel axis (graph_rewrites.py)

    def _check_options(self, values: dict[str, Any]) -> dict[str, Any]:
        remainder = values["int8_remainder"] or "fp32"  # None: not given
        if remainder not in INT8_REMAINDERS:
            raise UsageError(f"--int8-remainder {remainder!r}: choose one of {', '.join(INT8_REMAINDERS)}")
        # a float model has no remainder: the int8 target's structural proof runs this runner in fp32 with the
        # target's options (Target.validate refuses the flag with another --dtype)
        self.int8_remainder = remainder if self.dtype == "int8" else "fp32"
        streams, micro_batch = values["streams"], values["micro_batch"]  # >= 1 each (base.OPTIONS checked them)
        if streams > self.threads:
            raise RuntimeUnavailableError(f"--streams {streams} with {self.threads} thread(s): each OpenVINO "
                                          f"stream needs a thread of its own; use --streams {self.threads} or fewer")
        self.streams = int(streams)
        self.micro_batch = int(micro_batch) if micro_batch else None
        return {"streams": self.streams, "micro_batch": self.micro_batch, "int8_remainder": self.int8_remainder}

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._calibration = CalibrationSource(self.option_values["calibration"])
        if self.device.type != "cpu":
            raise RuntimeUnavailableError(f"--runtime openvino --device {self.device}: accelport runs OpenVINO on the "
                                          "CPU only; use --device cpu")
        if self.channels_last:
            raise RuntimeUnavailableError("--channels-last does not apply to --runtime openvino: OpenVINO picks its "
                                          "own blocked layouts; drop the flag")
        self._core = shared_core()
        self._snippets_off: str | None = None  # why OpenVINO's subgraph JIT is off (_trial), None while it is on
        capabilities = self._core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
        if self.int8_remainder == "bf16" and "BF16" not in capabilities:
            raise RuntimeUnavailableError(f"--int8-remainder bf16: this CPU has no BF16 support in OpenVINO "
                                          f"(capabilities: {', '.join(capabilities)}); drop it")
        needed = _CAPABILITY.get(self.dtype)
        if needed and needed not in capabilities:
            cpu = self._core.get_property("CPU", "FULL_DEVICE_NAME")
            raise RuntimeUnavailableError(
                f"--runtime openvino --dtype {self.dtype}: this CPU ({cpu}) "
                f"has no {needed} support in OpenVINO (capabilities: {', '.join(capabilities)}); it would silently "
                "run f32. Use --dtype fp32" + (", or --dtype bf16, which this CPU has" if "BF16" in capabilities else
                                               ", or a CPU with AMX/AVX512-BF16 (bf16) or AMX-FP16 (fp16)"))
        self._compiled: dict[int, Any] = {}  # by the batch size of one part
        self._parts: dict[tuple[int, ...], list[tuple[Any, int, int]]] = {}  # input shape -> (request, start, stop)
        self._effective: str | None = None
        self._export_info: dict[str, Any] = {}
        self._rewrites: tuple[str, ...] = ()  # graph_rewrites.py: what the exported copy of the model carries
        self._graph_paths: dict[tuple[int, ...], Any] = {}  # input shape -> the model file its parts compiled
        self._tapped: dict[tuple[Any, ...], tuple[Any, dict]] = {}  # (shape, places) -> compiled with them as outputs

    def _prepare_impl(self) -> None:
        # One folder per setting that changes the numbers or the plan: OpenVINO's own blob key does not hold the
        # precision hint, so an f32 blob would otherwise be reused for --dtype fp16 (and reported as fp16).
        self._blob_cache = ((self.cache_dir or default_cache_dir()) / "openvino"
                            / f"{self._hint}-threads{self.threads}-streams{self.streams}")
        self._config = {"CACHE_DIR": str(self._blob_cache),  # per compilation: the Core is shared
                        "INFERENCE_PRECISION_HINT": self._hint, "INFERENCE_NUM_THREADS": self.threads,
                        "PERFORMANCE_HINT": "LATENCY" if self.streams == 1 else "THROUGHPUT",
                        "NUM_STREAMS": self.streams}

    def _prepare_shape_impl(self, device_input: np.ndarray) -> dict[str, Any]:
        shape = tuple(device_input.shape)
        chosen = first_working_route([(name, functools.partial(self._build_parts, source, device_input))
                                      for name, source in self._routes(shape[1:])],
                                     f"--runtime openvino: {type(self.model).__name__}")
        self._export_info = {**chosen.value.to_json(), **chosen.to_json()}
        return {**self._export_info, "effective_precision": self._effective,
                "parts": [stop - start for _, start, stop in self._parts[shape]]}

    def _routes(self, chw: tuple[int, ...]) -> list[tuple[str, Any]]:
        """ONNX (TorchScript exporter), OpenVINO's direct PyTorch conversion, ONNX (dynamo exporter); routes
        already in the cache first. Always exported in fp32: the precision hint sets the math. What is exported
        is the model with its LayerNorm2d over the channel axis (graph_rewrites.py, on the exporter's own copy),
        unless ``rewrite_graph`` is off (the "openvino default" peer exports the model as it is)."""
        rewrites = self._rewrites = rewrites_for(self.model) if self.rewrite_graph else ()
        routes: list[tuple[str, Callable[[], Any]]] = [
            (f"onnx:{exporter}", functools.partial(export_onnx, self.model, chw, "fp32", self.cache_dir, exporter,
                                                   rewrites))
            for exporter in EXPORTERS]
        routes.insert(1, ("openvino:pytorch", functools.partial(convert_pytorch, self.model, chw, self.cache_dir,
                                                                 rewrites)))
        cached = {f"onnx:{e}" for e in EXPORTERS
                  if onnx_cache_entry(self.model, chw, "fp32", self.cache_dir, e, rewrites).present}
        if ir_cache_entry(self.model, chw, self.cache_dir, rewrites).present:
            cached.add("openvino:pytorch")
        return sorted(routes, key=lambda route: route[0] not in cached)

    def _build_parts(self, source: Any, device_input: np.ndarray) -> Any:
        """One route: its model file, compiled for each part's shape and run once; on failure nothing is kept."""
        shape = tuple(device_input.shape)
        exported = source()
        if self.dtype == "int8":  # the fp32 model, quantised by NNCF (cached)
            exported = quantize_openvino(exported, self._calibration.load(self.model, shape[1:]),
                                         transformer_style(self.model), self.cache_dir)
        try:
            parts = []
            for start, stop in split_bounds(shape[0], request_count(shape[0], self.streams, self.micro_batch)):
                compiled = self._compile(exported.path, (stop - start, *shape[1:]))
                parts.append((compiled.create_infer_request(), start, stop))
            self._parts[shape] = parts
            self._graph_paths[shape] = exported.path
            self._forward_impl(device_input)
        except Exception:
            self._parts.pop(shape, None)
            self._compiled.clear()
            raise
        return exported

    def _compile(self, onnx_path: Any, part_shape: tuple[int, ...]) -> Any:
        """The compiled model for one part's static shape (OpenVINO's CPU plugin is fastest without dynamic
        dims), its effective precision checked against the requested one."""
        if part_shape[0] in self._compiled:
            return self._compiled[part_shape[0]]
        if self.dtype == "int8" and "SNIPPETS_MODE" not in self._config:
            self._config.update(self._trial(Path(onnx_path), part_shape))
        model = self._core.read_model(str(onnx_path))
        model.reshape(list(part_shape))
        compiled = self._core.compile_model(model, "CPU", self._config)
        effective = _float_precision(compiled)
        if self.dtype == "int8":
            effective = self._check_int8(compiled, effective)
        if effective != self.dtype:
            raise RuntimeUnavailableError(f"--runtime openvino --dtype {self.dtype}: OpenVINO compiled the model in "
                                          f"{effective} instead; refusing to report it as {self.dtype}")
        self._effective = effective
        self._compiled[part_shape[0]] = compiled
        return compiled

    def graph(self, shape: tuple[int, ...]) -> Any:
        """The ``ov.Model`` this runner compiled for inputs of ``shape`` (after a forward of that shape): the same
        file, fp32 export or NNCF's int8 model, reshaped to the whole batch."""
        model = self._core.read_model(str(self._graph_paths[shape]))
        model.reshape(list(shape))
        return model

    def graph_ops(self, shape: tuple[int, ...]) -> list[GraphOp]:
        """``graph(shape)``'s operations, for ``layers`` to find module outputs by name."""
        return openvino_ops(self.graph(shape))

    def output_place(self, shape: tuple[int, ...]) -> tuple[str, int]:
        """The place (operation friendly name, output port) of the model's output, as ``tensors_at`` takes
        places."""
        source = self.graph(shape).outputs[0].get_node().input_value(0)
        return source.get_node().get_friendly_name(), source.get_index()

    def tensors_at(self, device_input: np.ndarray, places: dict[str, tuple[str, int]]) -> dict[str, np.ndarray]:
        """The values of named places of the graph (``{key: (operation friendly name, output port)}``) for one
        batch: the same model file, compiled with the same precision and threads, one request, with those tensors
        added as outputs (which can keep OpenVINO from fusing across them: ``layers`` judges the model's output
        on the runner's own program)."""
        shape, wanted = tuple(device_input.shape), tuple(dict.fromkeys(places.values()))
        if (shape, wanted) not in self._tapped:
            self._tapped[(shape, wanted)] = self._compile_tapped(shape, wanted)
        compiled, index = self._tapped[(shape, wanted)]
        results = compiled.create_infer_request().infer({0: device_input})
        return {key: np.array(results[compiled.outputs[index[place]]], dtype=np.float32)
                for key, place in places.items()}

    def _compile_tapped(self, shape: tuple[int, ...], places: tuple[tuple[str, int], ...]) -> tuple[Any, dict]:
        model = self.graph(shape)
        operations = {op.get_friendly_name(): op for op in model.get_ordered_ops()}
        model.add_outputs([operations[name].output(port) for name, port in places])
        index = {}
        for position, output in enumerate(model.outputs):
            source = output.get_node().input_value(0)
            index[(source.get_node().get_friendly_name(), source.get_index())] = position
        config = {**self._config, "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1}
        config.pop("CACHE_DIR")  # a one-off program: no blob in the cache
        compiled = self._core.compile_model(model, "CPU", config)
        effective = _float_precision(compiled)
        expected = self.int8_remainder if self.dtype == "int8" else self.dtype
        if effective != expected:
            raise RuntimeUnavailableError(f"--runtime openvino --dtype {self.dtype}: OpenVINO compiled the tapped "
                                          f"model in {effective}, not {expected}")
        return compiled, index

    def _trial(self, model_path: Path, part_shape: tuple[int, ...]) -> dict[str, Any]:
        """{} when the int8 model runs at this shape in a child process (``openvino_trial.py``), else the setting
        that kept OpenVINO from crashing: its subgraph JIT (snippets) off, 1.2-1.4x slower on ConvNeXt V2 int8 here.
        The outcome is kept in the blob cache, so a cached model pays the trial once."""
        config = dict(self._config)
        key = hashlib.sha256(json.dumps([str(model_path.resolve()), list(part_shape), config, ov.get_version()],
                                        sort_keys=True).encode()).hexdigest()[:24]
        record = self._blob_cache / f"trial-{key}.json"
        try:
            outcome = json.loads(record.read_text())
        except (OSError, ValueError):
            # -I: not this folder first on sys.path, where "import openvino" would find this module
            command = [sys.executable, "-I", str(TRIAL_SCRIPT), str(model_path), json.dumps(list(part_shape)),
                       json.dumps(config)]
            done = subprocess.run(command, capture_output=True, text=True, timeout=600)
            outcome = {"signal": -done.returncode if done.returncode < 0 else None}
            if done.returncode > 0:  # an error, not a crash: compiling here raises it in words
                _logger.info("OpenVINO trial process: exit %d: %s", done.returncode, done.stderr.strip()[-300:])
            self._blob_cache.mkdir(parents=True, exist_ok=True)
            write_json_atomic(record, outcome)
        if not outcome.get("signal"):
            return {}
        self._snippets_off = (f"OpenVINO {ov.get_version()} crashed a trial process running this int8 model at "
                              f"{list(part_shape)} ({_signal_name(outcome['signal'])}), so its subgraph JIT "
                              "(SNIPPETS_MODE) is off: slower, not crashing")
        _logger.warning("--runtime openvino --dtype int8: %s", self._snippets_off)
        # a folder of its own: OpenVINO's blob key does not hold SNIPPETS_MODE, and the trial's blob has them on
        self._blob_cache = self._blob_cache / "snippets-off"
        return {"SNIPPETS_MODE": "DISABLE", "CACHE_DIR": str(self._blob_cache)}

    @property
    def _hint(self) -> str:
        """OpenVINO's INFERENCE_PRECISION_HINT: the dtype's, and for int8 the float remainder's."""
        return _HINT[self.int8_remainder] if self.dtype == "int8" else _HINT[self.dtype]

    def _check_int8(self, compiled: Any, float_precision: str) -> str:
        """int8 is what the compiled graph executes: its compute layers read back, with the float remainder in
        the precision asked (--int8-remainder) for the rest."""
        self._int8_layers = openvino_int8_layers(compiled)
        if float_precision != self.int8_remainder or not self._int8_layers["int8"]:
            return f"{float_precision} (int8 layers: {self._int8_layers['int8']})"
        return "int8"

    def _to_device_impl(self, batch: torch.Tensor) -> np.ndarray:
        return np.ascontiguousarray(batch.detach().cpu().numpy(), dtype=np.float32)

    def _forward_impl(self, device_input: np.ndarray) -> np.ndarray:
        parts = self._parts[device_input.shape]
        if len(parts) == 1:
            return parts[0][0].infer({0: device_input}, share_inputs=True)[0]
        for request, start, stop in parts:  # queued on the streams (OpenVINO schedules them), then all awaited
            request.start_async({0: device_input[start:stop]}, share_inputs=True)
        for request, _, _ in parts:
            request.wait()
        return np.concatenate([request.get_output_tensor(0).data for request, _, _ in parts])

    def synchronize(self) -> None:
        """Nothing queued: ``forward`` returned after every part's outputs were written."""

    def _to_host_impl(self, device_output: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.array(device_output, dtype=np.float32))

    def _describe_impl(self) -> dict[str, Any]:
        compiled = next(iter(self._compiled.values()), None)
        read_back = {}
        if compiled is not None:
            read_back = {"inference_num_threads": int(compiled.get_property("INFERENCE_NUM_THREADS")),
                         "num_streams": int(compiled.get_property("NUM_STREAMS")),
                         "performance_hint": str(compiled.get_property("PERFORMANCE_HINT"))}
        return {"openvino": ov.get_version(), "precision_hint": self._hint,
                "effective_precision": self._effective, "static_shapes": [list(s) for s in self._parts],
                "part_batch_sizes": sorted(self._compiled),
                **({"graph_rewrites": list(self._rewrites)} if self._export_info else {}),  # none: nothing exported
                "compiled_blob_cache": str(getattr(self, "_blob_cache", "")) or None, **read_back, **self._export_info,
                **({"compute_layers": getattr(self, "_int8_layers", None), "int8_remainder": self.int8_remainder,
                    "snippets_disabled": self._snippets_off,
                    **self._calibration.to_json()} if self.dtype == "int8" else {})}

    def _close_impl(self) -> None:
        self._parts.clear()
        self._graph_paths.clear()
        self._tapped.clear()
        self._compiled.clear()
