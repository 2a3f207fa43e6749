"""ONNX Runtime: the model exported to ONNX (dynamic batch), run by the best execution provider present.

Providers: CUDA for ``--device cuda``, CANN for ``--device npu`` (Ascend), CPU otherwise, each followed by
the CPU provider for any node it lacks. Graph optimisations: ``ORT_ENABLE_ALL`` (constant folding, fusions,
and on CPU the NCHWc layout transform, which is why ``--channels-last`` does not apply here).

Timing: ``InferenceSession.run`` is synchronous and returns host arrays, so ``synchronize()`` has nothing to
wait for; on CUDA/CANN, the "compute" latency therefore includes ORT's own host<->device copies.
"""

from __future__ import annotations

import functools
import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch

from ..errors import RuntimeUnavailableError
from .base import Runner
from .graph_ops import GraphOp, onnx_ops
from .onnx_export import INPUT_NAME, cached_exporters_first, export_onnx
from .quantize import CalibrationSource, onnxruntime_int8_layers, quantize_onnx
from .routes import first_working_route

_logger = logging.getLogger(__name__)

_PROVIDER_FOR_DEVICE = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider", "npu": "CANNExecutionProvider"}
_NUMPY_DTYPE = {"fp32": np.float32, "fp16": np.float16, "int8": np.float32}  # int8: quantised inside the graph


class OnnxRuntimeRunner(Runner):
    name = "onnxruntime"
    options = frozenset({"calibration"})  # --dtype int8: quantize_static's calibration images

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._calibration = CalibrationSource(self.option_values["calibration"])
        provider = _PROVIDER_FOR_DEVICE.get(self.device.type)
        available = ort.get_available_providers()
        if provider is None or provider not in available:
            raise RuntimeUnavailableError(
                f"--runtime onnxruntime --device {self.device}: needs {provider or 'an execution provider for it'}, "
                f"this onnxruntime has {', '.join(available)} (for CUDA: pip install onnxruntime-gpu)")
        if self.channels_last:
            raise RuntimeUnavailableError("--channels-last does not apply to --runtime onnxruntime: ONNX is NCHW and "
                                          "ORT picks its own internal layout (NCHWc on CPU); drop the flag")
        if self.dtype == "bf16":
            raise RuntimeUnavailableError("--runtime onnxruntime --dtype bf16: ONNX Runtime has no bf16 convolution "
                                          "kernels; use fp32, fp16 on CUDA, or another runtime for bf16")
        if self.dtype == "fp16" and self.device.type == "cpu":
            raise RuntimeUnavailableError("--runtime onnxruntime --dtype fp16 --device cpu: ORT's CPU provider lacks "
                                          "fp16 kernels for most ops; use fp32 on CPU, fp16 with the CUDA provider")
        self._providers = [provider] + (["CPUExecutionProvider"] if provider != "CPUExecutionProvider" else [])
        self._sessions: dict[tuple[int, ...], ort.InferenceSession] = {}
        self._model_files: dict[tuple[int, ...], Any] = {}  # per input chw: the ONNX file the session runs
        self._tapped: dict[tuple[Any, ...], tuple[ort.InferenceSession, list[str]]] = {}
        self._export_info: dict[str, Any] = {}

    def _prepare_impl(self) -> None:
        self._options = self._session_options()

    def _session_options(self, optimized_model_path: Path | None = None) -> ort.SessionOptions:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3
        if optimized_model_path is not None:
            options.optimized_model_filepath = str(optimized_model_path)
        return options

    def _session_for(self, first_input: np.ndarray) -> tuple[ort.InferenceSession, dict[str, Any]]:
        chw = tuple(first_input.shape[1:])
        if chw not in self._sessions:
            chosen = first_working_route(
                [(exporter, functools.partial(self._export_and_open, first_input, exporter))
                 for exporter in cached_exporters_first(self.model, chw, self._export_dtype, self.cache_dir)],
                f"--runtime onnxruntime: {type(self.model).__name__} in {self.dtype}")
            self._sessions[chw], exported = chosen.value
            self._model_files[chw] = exported.path
            self._export_info = {**exported.to_json(), **chosen.to_json()}
            return self._sessions[chw], dict(self._export_info)
        return self._sessions[chw], {}

    def _export_and_open(self, first_input: np.ndarray, exporter: str) -> tuple[ort.InferenceSession, Any]:
        """One exporter's file, opened and run once: a file ONNX Runtime cannot load or run counts as that
        exporter's failure."""
        chw = tuple(first_input.shape[1:])
        exported: Any = export_onnx(self.model, chw, self._export_dtype, self.cache_dir, exporter)
        if self.dtype == "int8":  # the fp32 export, quantised by ONNX Runtime's own tool (cached)
            exported = quantize_onnx(exported, self._calibration.load(self.model, chw), self.cache_dir)
            if self._providers[0] == "CPUExecutionProvider":  # a provider that compiles subgraphs cannot save them
                return self._open_int8(exported, first_input), exported
        session = ort.InferenceSession(str(exported.path), self._options, providers=self._providers,
                                       provider_options=self._provider_options)
        session.run(None, {INPUT_NAME: first_input})
        return session, exported

    def _open_int8(self, quantized: Any, first_input: np.ndarray) -> ort.InferenceSession:
        """The QDQ model's session, with its compute layers read back from the optimised graph it runs."""
        import onnx

        with tempfile.TemporaryDirectory(prefix="accelport-ort-") as folder:
            optimized = Path(folder) / "optimized.onnx"
            session = ort.InferenceSession(str(quantized.path), self._session_options(optimized),
                                           providers=self._providers, provider_options=self._provider_options)
            self._int8_layers = onnxruntime_int8_layers(onnx.load(str(optimized), load_external_data=False))
        session.run(None, {INPUT_NAME: first_input})
        if self._int8_layers["float"]:
            _logger.warning("--runtime onnxruntime --dtype int8: %d compute layer(s) run in int8 and %d in float (ONNX "
                            "Runtime did not fuse their quantise/dequantise nodes); those are slower than fp32",
                            self._int8_layers["int8"], self._int8_layers["float"])
        return session

    @property
    def _provider_options(self) -> list[dict[str, Any]]:
        return [{"device_id": self.device.index or 0} if p != "CPUExecutionProvider" else {} for p in self._providers]

    @property
    def _export_dtype(self) -> str:
        return "fp32" if self.dtype == "int8" else self.dtype

    def _prepare_shape_impl(self, device_input: np.ndarray) -> dict[str, Any]:
        session, details = self._session_for(device_input)
        session.run(None, {INPUT_NAME: device_input})  # first run of this batch size allocates its buffers
        return details

    def _to_device_impl(self, batch: torch.Tensor) -> np.ndarray:
        return np.ascontiguousarray(batch.detach().cpu().numpy(), dtype=_NUMPY_DTYPE[self.dtype])

    def _forward_impl(self, device_input: np.ndarray) -> np.ndarray:
        return self._sessions[tuple(device_input.shape[1:])].run(None, {INPUT_NAME: device_input})[0]

    def graph_ops(self, shape: tuple[int, ...]) -> list[GraphOp]:
        """The operations of the ONNX file this runner runs for inputs of ``shape`` (after a forward of that
        shape): the fp32 export or the QDQ int8 model, for ``layers`` to find module outputs by name."""
        import onnx

        return onnx_ops(onnx.load(str(self._model_files[tuple(shape[1:])]), load_external_data=False))

    def output_place(self, shape: tuple[int, ...]) -> tuple[str, int]:
        """The place (node name, output index) of the model's output, as ``tensors_at`` takes places."""
        import onnx

        graph = onnx.load(str(self._model_files[tuple(shape[1:])]), load_external_data=False).graph
        output = graph.output[0].name
        return next((node.name, list(node.output).index(output)) for node in graph.node if output in node.output)

    def tensors_at(self, device_input: np.ndarray, places: dict[str, tuple[str, int]]) -> dict[str, np.ndarray]:
        """The values of named places of the graph (``{key: (node name, output index)}``) for one batch: the same
        file with those tensors added as graph outputs, run by a session with the same options and providers
        (a tensor made an output is kept, so ORT may skip a fusion across it: ``layers`` judges the model's
        output on the runner's own session)."""
        chw, wanted = tuple(device_input.shape[1:]), tuple(dict.fromkeys(places.values()))
        if not wanted:  # run(output_names=[]) would return every output of the model
            return {}
        if (chw, wanted) not in self._tapped:
            self._tapped[(chw, wanted)] = self._open_tapped(chw, wanted)
        session, names = self._tapped[(chw, wanted)]
        values = dict(zip(names, session.run(names, {INPUT_NAME: device_input}), strict=True))
        tensor = {place: name for place, name in zip(wanted, names, strict=True)}
        return {key: np.asarray(values[tensor[place]], dtype=np.float32) for key, place in places.items()}

    def _open_tapped(self, chw: tuple[int, ...], places: tuple[tuple[str, int], ...]) -> tuple[Any, list[str]]:
        import onnx

        model = onnx.load(str(self._model_files[chw]))
        nodes = {node.name: node for node in model.graph.node}
        names = [nodes[name].output[port] for name, port in places]
        present = {output.name for output in model.graph.output}
        model.graph.output.extend(onnx.ValueInfoProto(name=name) for name in dict.fromkeys(names)
                                  if name not in present)  # no type given: ORT infers it
        session = ort.InferenceSession(model.SerializeToString(), self._options, providers=self._providers,
                                       provider_options=self._provider_options)
        return session, names

    def synchronize(self) -> None:
        """Nothing queued: ``run`` returned after the outputs were on the host."""

    def _to_host_impl(self, device_output: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.asarray(device_output, dtype=np.float32).copy())

    def _describe_impl(self) -> dict[str, Any]:
        session = next(iter(self._sessions.values()), None)
        return {"onnxruntime": ort.__version__, "providers_requested": self._providers,
                "providers": session.get_providers() if session is not None else None,
                "graph_optimization_level": "ORT_ENABLE_ALL", "intra_op_num_threads": self.threads,
                "effective_precision": self._effective_precision, **self._export_info,
                **({"compute_layers": getattr(self, "_int8_layers", None), **self._calibration.to_json()}
                   if self.dtype == "int8" else {})}

    @property
    def _effective_precision(self) -> str:
        """int8 when the optimised graph runs int8 compute layers (as OpenVINO's read-back), else what it runs."""
        layers = getattr(self, "_int8_layers", None)
        if self.dtype != "int8" or layers is None or layers["int8"]:
            return self.dtype
        return "fp32 (int8 layers: 0)"

    def _close_impl(self) -> None:
        self._sessions.clear()
        self._tapped.clear()
