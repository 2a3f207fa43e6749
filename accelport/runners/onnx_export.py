"""ONNX export with a dynamic batch axis, cached on disk: shared by the ONNX Runtime and OpenVINO runners.

Uses torch's TorchScript-based exporter (``dynamo=False``): it needs no extra package, exports timm CNNs in
under a second and takes ``dynamic_axes`` for the batch. The spatial size is fixed by the example input
(one file per input size); the batch is dynamic, so one file serves every batch size.
"""

from __future__ import annotations

import copy
import logging
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import RuntimeUnavailableError
from .base import DTYPES
from .cache import CacheEntry, cache_entry, library_versions, model_identity

_logger = logging.getLogger(__name__)

OPSET = 17
INPUT_NAME = "input"
OUTPUT_NAME = "output"


@dataclass(frozen=True)
class OnnxExport:
    path: Path
    cache_hit: bool
    seconds: float
    key: str

    def to_json(self) -> dict[str, object]:
        return {"onnx_path": str(self.path), "onnx_cache_hit": self.cache_hit, "export_s": round(self.seconds, 4),
                "onnx_cache_key": self.key}


def onnx_cache_entry(model: torch.nn.Module, chw: tuple[int, ...], dtype: str,
                     cache_dir: str | Path | None) -> CacheEntry:
    fields = {**model_identity(model), "input_chw": list(chw), "dtype": dtype, "opset": OPSET,
              "exporter": "torchscript", "dynamic_axes": "batch", **library_versions("torch", "timm", "onnx")}
    return cache_entry(cache_dir, "onnx", fields, ".onnx")


def export_onnx(model: torch.nn.Module, chw: tuple[int, ...], dtype: str = "fp32",
                cache_dir: str | Path | None = None) -> OnnxExport:
    """The ONNX file of ``model`` for inputs ``[N, *chw]`` in ``dtype``: from the cache, else exported now."""
    started = time.perf_counter()
    entry = onnx_cache_entry(model, chw, dtype, cache_dir)
    if entry.hit:
        _logger.info("ONNX export cache hit: %s", entry.path)
        return OnnxExport(entry.path, True, time.perf_counter() - started, entry.key)
    module = copy.deepcopy(model).to("cpu", DTYPES[dtype]).eval()
    example = torch.zeros((2, *chw), dtype=DTYPES[dtype])  # batch 2, so nothing specialises on batch 1

    def build(path: Path) -> None:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice, once per export
            try:
                torch.onnx.export(module, (example,), str(path), dynamo=False, opset_version=OPSET,
                                  input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], do_constant_folding=True,
                                  dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}})
            except Exception as exc:
                name = type(model).__name__
                raise RuntimeUnavailableError(f"ONNX export of {name} in {dtype} failed: {exc}") from exc

    entry.produce(build)
    seconds = time.perf_counter() - started
    _logger.info("Exported ONNX (%s, input [N, %s]) in %.2f s: %s", dtype, ", ".join(map(str, chw)), seconds,
                 entry.path)
    return OnnxExport(entry.path, False, seconds, entry.key)
