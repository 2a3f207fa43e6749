"""OpenVINO's direct PyTorch conversion (``openvino.convert_model(module, example_input=...)``), no ONNX between.

The OpenVINO runner's second route, for models the ONNX exporters cannot take. The converted model is saved as
OpenVINO IR (``model.xml`` + ``model.bin``, weights kept in f32: the precision hint decides the math) in a
folder of the accelport cache, keyed like the ONNX exports, so the conversion is paid once.
"""

from __future__ import annotations

import copy
import logging
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from .cache import CacheEntry, cache_entry, library_versions, model_identity
from .graph_rewrites import apply_rewrites

_logger = logging.getLogger(__name__)

IR_FILE = "model.xml"


@dataclass(frozen=True)
class IrExport:
    """An IR folder in the cache; ``path`` is its ``model.xml`` (what ``Core.read_model`` takes)."""

    path: Path
    cache_hit: bool
    seconds: float
    key: str

    def to_json(self) -> dict[str, object]:
        return {"ir_path": str(self.path), "ir_cache_hit": self.cache_hit, "convert_s": round(self.seconds, 4),
                "ir_cache_key": self.key}


def ir_cache_entry(model: torch.nn.Module, chw: tuple[int, ...], cache_dir: str | Path | None,
                   rewrites: tuple[str, ...] = ()) -> CacheEntry:
    fields = {**model_identity(model, rewrites), "input_chw": list(chw), "dtype": "fp32",
              "converter": "openvino.convert_model", **library_versions("torch", "timm", "openvino")}
    return cache_entry(cache_dir, "openvino-ir", fields, "")


def convert_pytorch(model: torch.nn.Module, chw: tuple[int, ...], cache_dir: str | Path | None = None,
                    rewrites: tuple[str, ...] = ()) -> IrExport:
    """The IR of ``model`` for inputs ``[N, *chw]`` (static batch 1 in the file; the runner reshapes it), with
    ``rewrites`` (graph_rewrites.py) applied to the copy it converts."""
    import openvino as ov

    started = time.perf_counter()
    entry = ir_cache_entry(model, chw, cache_dir, rewrites)
    hit = entry.hit
    if not hit:
        module = copy.deepcopy(model).to("cpu", torch.float32).eval()
        apply_rewrites(module, rewrites)
        example = torch.zeros((1, *chw))

        def build(folder: Path) -> None:
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")  # tracer notices
                converted = ov.convert_model(module, example_input=example)
            folder.mkdir()
            ov.save_model(converted, str(folder / IR_FILE), compress_to_fp16=False)

        entry.produce(build)
        _logger.info("Converted %s to OpenVINO IR directly in %.2f s: %s", type(model).__name__,
                     time.perf_counter() - started, entry.path)
    return IrExport(entry.path / IR_FILE, hit, time.perf_counter() - started, entry.key)
