"""ONNX export with a dynamic batch axis, cached on disk: shared by the ONNX Runtime and OpenVINO runners.

Two exporters, tried in this order by the runners (``EXPORTERS``): torch's TorchScript-based one
(``dynamo=False``: no extra package, timm CNNs in under a second, ``dynamic_axes`` for the batch), then the
dynamo one (``torch.export`` + onnxscript), which takes models the first cannot trace, e.g. EVA-02's tensor
``is_causal``. The spatial size is fixed by the example input (one file per input size); the batch is dynamic,
so one file serves every batch size. The exporter is part of the cache key.
"""

from __future__ import annotations

import copy
import logging
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import RuntimeUnavailableError
from .base import DTYPES
from .cache import CacheEntry, cache_entry, library_versions, model_identity
from .graph_rewrites import apply_rewrites

_logger = logging.getLogger(__name__)

OPSET = 17
DYNAMO_OPSET = 18  # the dynamo exporter's lowest supported opset
EXPORTERS = ("torchscript", "dynamo")
INPUT_NAME = "input"
OUTPUT_NAME = "output"


@dataclass(frozen=True)
class OnnxExport:
    path: Path
    cache_hit: bool
    seconds: float
    key: str
    exporter: str = "torchscript"

    def to_json(self) -> dict[str, object]:
        return {"onnx_path": str(self.path), "onnx_cache_hit": self.cache_hit, "export_s": round(self.seconds, 4),
                "onnx_cache_key": self.key, "onnx_exporter": self.exporter}


def onnx_cache_entry(model: torch.nn.Module, chw: tuple[int, ...], dtype: str, cache_dir: str | Path | None,
                     exporter: str = "torchscript", rewrites: tuple[str, ...] = ()) -> CacheEntry:
    fields = {**model_identity(model, rewrites), "input_chw": list(chw), "dtype": dtype,
              "opset": OPSET if exporter == "torchscript" else DYNAMO_OPSET,
              "exporter": exporter, "dynamic_axes": "batch", **library_versions("torch", "timm", "onnx")}
    return cache_entry(cache_dir, "onnx", fields, ".onnx")


def _export_torchscript(module: torch.nn.Module, example: torch.Tensor, path: Path) -> None:
    torch.onnx.export(module, (example,), str(path), dynamo=False, opset_version=OPSET,
                      input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], do_constant_folding=True,
                      dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}})


def _export_dynamo(module: torch.nn.Module, example: torch.Tensor, path: Path) -> None:
    # external_data=False: one self-contained file, so the cache moves a single path into place.
    torch.onnx.export(module, (example,), str(path), dynamo=True, opset_version=DYNAMO_OPSET, external_data=False,
                      input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], verbose=False, optimize=True,
                      dynamic_shapes=({0: torch.export.Dim.DYNAMIC},))


_EXPORT: dict[str, Callable[[torch.nn.Module, torch.Tensor, Path], None]] = {
    "torchscript": _export_torchscript, "dynamo": _export_dynamo}


def cached_exporters_first(model: torch.nn.Module, chw: tuple[int, ...], dtype: str = "fp32",
                           cache_dir: str | Path | None = None) -> list[str]:
    """``EXPORTERS`` with those already in the cache first: a model that needed the second exporter once does
    not pay for the first one's failure again."""
    return sorted(EXPORTERS, key=lambda name: not onnx_cache_entry(model, chw, dtype, cache_dir, name).present)


def export_onnx(model: torch.nn.Module, chw: tuple[int, ...], dtype: str = "fp32",
                cache_dir: str | Path | None = None, exporter: str = "torchscript",
                rewrites: tuple[str, ...] = ()) -> OnnxExport:
    """The ONNX file of ``model`` for inputs ``[N, *chw]`` in ``dtype``: from the cache, else exported now, with
    ``rewrites`` (graph_rewrites.py) applied to the copy it exports."""
    started = time.perf_counter()
    entry = onnx_cache_entry(model, chw, dtype, cache_dir, exporter, rewrites)
    if entry.hit:
        _logger.info("ONNX export cache hit: %s", entry.path)
        return OnnxExport(entry.path, True, time.perf_counter() - started, entry.key, exporter)
    module = copy.deepcopy(model).to("cpu", DTYPES[dtype]).eval()
    apply_rewrites(module, rewrites)
    example = torch.zeros((2, *chw), dtype=DTYPES[dtype])  # batch 2, so nothing specialises on batch 1

    def build(path: Path) -> None:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the exporters' deprecation and tracer notices, once per export
            try:
                _EXPORT[exporter](module, example, path)
            except Exception as exc:
                name = type(model).__name__
                raise RuntimeUnavailableError(f"ONNX export ({exporter}) of {name} in {dtype} failed: "
                                              f"{exc}") from exc

    entry.produce(build)
    seconds = time.perf_counter() - started
    _logger.info("Exported ONNX (%s, %s, input [N, %s]) in %.2f s: %s", exporter, dtype, ", ".join(map(str, chw)),
                 seconds, entry.path)
    return OnnxExport(entry.path, False, seconds, entry.key, exporter)
