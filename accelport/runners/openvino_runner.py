"""OpenVINO on CPU: the cached ONNX export, reshaped to a static batch, compiled with a precision hint.

``INFERENCE_PRECISION_HINT`` follows ``--dtype`` (f32 / bf16 / f16), and the precision the compiled model
actually uses is READ BACK and recorded. OpenVINO silently runs bf16 on CPUs with AMX/AVX512-BF16 unless told
f32, and silently falls back to f32 where bf16/f16 is not supported: either way the requested precision would
be a lie, so a mismatch is a clear error, never a bf16 run reported as fp32 (or the reverse).

Threads: ``INFERENCE_NUM_THREADS`` = the runner's thread count, one stream, ``PERFORMANCE_HINT=LATENCY``.
Compiled blobs are cached by OpenVINO itself (``CACHE_DIR`` under the accelport cache). ``infer`` is
synchronous (it returns after the outputs are written), so ``synchronize()`` has nothing to wait for.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import openvino as ov
import torch

from ..errors import RuntimeUnavailableError
from .base import Runner
from .cache import default_cache_dir
from .onnx_export import export_onnx

_logger = logging.getLogger(__name__)

_HINT = {"fp32": "f32", "bf16": "bf16", "fp16": "f16"}
_FROM_OV = {"f32": "fp32", "bf16": "bf16", "f16": "fp16"}
_CAPABILITY = {"bf16": "BF16", "fp16": "FP16"}


class OpenVinoRunner(Runner):
    name = "openvino"

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        if self.device.type != "cpu":
            raise RuntimeUnavailableError(f"--runtime openvino --device {self.device}: accelport runs OpenVINO on the "
                                          "CPU only; use --device cpu")
        if self.channels_last:
            raise RuntimeUnavailableError("--channels-last does not apply to --runtime openvino: OpenVINO picks its "
                                          "own blocked layouts; drop the flag")
        self._core = ov.Core()
        capabilities = self._core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
        needed = _CAPABILITY.get(self.dtype)
        if needed and needed not in capabilities:
            cpu = self._core.get_property("CPU", "FULL_DEVICE_NAME")
            raise RuntimeUnavailableError(
                f"--runtime openvino --dtype {self.dtype}: this CPU ({cpu}) "
                f"has no {needed} support in OpenVINO (capabilities: {', '.join(capabilities)}); it would silently "
                "run f32. Use --dtype fp32, or a CPU with AMX/AVX512-BF16 (bf16) or AMX-FP16 (fp16)")
        self._compiled: dict[tuple[int, ...], Any] = {}
        self._requests: dict[tuple[int, ...], Any] = {}
        self._effective: str | None = None
        self._export_info: dict[str, Any] = {}

    def _prepare_impl(self) -> None:
        self._blob_cache = (self.cache_dir or default_cache_dir()) / "openvino"
        self._core.set_property({"CACHE_DIR": str(self._blob_cache)})
        self._config = {"INFERENCE_PRECISION_HINT": _HINT[self.dtype], "INFERENCE_NUM_THREADS": self.threads,
                        "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1}

    def _prepare_shape_impl(self, device_input: np.ndarray) -> dict[str, Any]:
        shape = tuple(device_input.shape)
        exported = export_onnx(self.model, shape[1:], "fp32", self.cache_dir)  # the hint sets the precision
        self._export_info = exported.to_json()
        model = self._core.read_model(str(exported.path))
        model.reshape(list(shape))  # static shapes: OpenVINO's CPU plugin is fastest without dynamic dims
        compiled = self._core.compile_model(model, "CPU", self._config)
        effective = _FROM_OV.get(compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name(), "unknown")
        if effective != self.dtype:
            raise RuntimeUnavailableError(f"--runtime openvino --dtype {self.dtype}: OpenVINO compiled the model in "
                                          f"{effective} instead; refusing to report it as {self.dtype}")
        self._effective = effective
        self._compiled[shape] = compiled
        self._requests[shape] = compiled.create_infer_request()
        self._requests[shape].infer({0: device_input}, share_inputs=True)
        return {**exported.to_json(), "effective_precision": effective}

    def _to_device_impl(self, batch: torch.Tensor) -> np.ndarray:
        return np.ascontiguousarray(batch.detach().cpu().numpy(), dtype=np.float32)

    def _forward_impl(self, device_input: np.ndarray) -> np.ndarray:
        return self._requests[device_input.shape].infer({0: device_input}, share_inputs=True)[0]

    def synchronize(self) -> None:
        """Nothing queued: ``infer`` returned after the outputs were written."""

    def _to_host_impl(self, device_output: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.array(device_output, dtype=np.float32))

    def _describe_impl(self) -> dict[str, Any]:
        compiled = next(iter(self._compiled.values()), None)
        read_back = {}
        if compiled is not None:
            read_back = {"inference_num_threads": int(compiled.get_property("INFERENCE_NUM_THREADS")),
                         "num_streams": int(compiled.get_property("NUM_STREAMS")),
                         "performance_hint": str(compiled.get_property("PERFORMANCE_HINT"))}
        return {"openvino": ov.get_version(), "precision_hint": _HINT[self.dtype],
                "effective_precision": self._effective, "static_shapes": [list(s) for s in self._compiled],
                "compiled_blob_cache": str(getattr(self, "_blob_cache", "")) or None, **read_back, **self._export_info}

    def _close_impl(self) -> None:
        self._requests.clear()
        self._compiled.clear()
