"""The recipes a user would write by hand, measured as peer rows of the same sweep, and the pick against them.

A speed-up over plain eager proves little when ten lines of ``torch.compile`` do as well. So the bench also
times, in the same process and rounds as its own configurations, what a user would try first:

- ``timm eager``: the model as timm builds it (fp32: the sweep's eager fp32 baseline row; bf16/fp16: under
  ``torch.autocast``, the documented way to run a model in half precision);
- ``torch.compile default``: ``torch.compile(model)`` (autocast for bf16/fp16);
- ``torch.compile freezing channels-last``: Inductor freezing (``torch._inductor.config.freezing = True`` while
  it traces and compiles, as the Intel/PyTorch CPU guides set it) on a channels-last model and input (autocast
  for bf16/fp16);
- ``onnxruntime default``: ``InferenceSession`` with default ``SessionOptions`` on the same ONNX export;
- ``openvino default``: ``core.compile_model`` with no hint beyond the precision, on the ONNX export of the
  model as timm builds it (dynamic batch axis; accelport's own OpenVINO rows export a copy with LayerNorm2d over
  the channel axis, runners/graph_rewrites.py).

Each peer row is parity-checked like any other (a fast but wrong recipe is no benchmark), is never picked
(``kind: "peer"``: ``run --runtime auto`` cannot run it), and ``compare_with_peers`` gives, per (dtype, batch),
the pick, the best peer passing parity and their paired ratio: the median over timing rounds of
(pick's round p50 / peer's round p50), so load that hits a round hits both.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import RuntimeUnavailableError
from ..runners.base import DTYPES, QUANTIZED_DTYPES, Runner
from ..runners.compile import check_inductor_device, packed_weight_ops, raise_recompile_limit
from .rows import rounds_disagree

_logger = logging.getLogger(__name__)

BASELINE_PEER = "timm eager"  # the eager fp32 baseline row is also the fp32 "plain timm" peer


class TorchRecipeRunner(Runner):
    """PyTorch as a user writes it: eager or ``torch.compile`` (with ``inductor_config`` set while each shape is
    traced and compiled), optional channels-last, and for bf16/fp16 ``torch.autocast`` around the call (weights
    stay fp32, convolutions and matmuls run in the dtype)."""

    name = "torch"
    uses_torch_threads = True

    def __init__(self, *args: Any, inductor_config: dict[str, Any] | None = None, compiled: bool = True,
                 **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.compiled, self.inductor_config = compiled, dict(inductor_config or {})
        if compiled:
            check_inductor_device(self.device, "torch.compile")
        self.autocast = self.dtype != "fp32"

    def _prepare_impl(self) -> None:
        memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        self._module = copy.deepcopy(self.model).eval().to(self.device).to(memory_format=memory_format)
        self._call: Callable[[torch.Tensor], Any] = self._module
        if self.compiled:
            raise_recompile_limit()
            self._call = torch.compile(self._module, dynamic=False)

    def _context(self) -> contextlib.AbstractContextManager:
        if not self.autocast:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=DTYPES[self.dtype])

    def _to_device_impl(self, batch: torch.Tensor) -> torch.Tensor:
        memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        return batch.to(self.device, torch.float32, memory_format=memory_format)

    @torch.inference_mode()
    def _forward_impl(self, device_input: torch.Tensor) -> torch.Tensor:
        with self._context():
            return self._call(device_input)

    def _prepare_shape_impl(self, device_input: torch.Tensor) -> dict[str, Any]:
        packed_before = packed_weight_ops()
        with torch._inductor.config.patch(self.inductor_config):
            self._forward_impl(device_input)  # compiles for this shape (Dynamo, then Inductor)
        self.synchronize()
        return {"compiled": self.compiled, "packed_weight_ops": packed_weight_ops() - packed_before}

    def _describe_impl(self) -> dict[str, Any]:
        return {"torch_compile": self.compiled, "inductor_config": self.inductor_config, "autocast": self.autocast,
                "torch_threads": torch.get_num_threads()}

    def _close_impl(self) -> None:
        del self._module, self._call


def _onnxruntime_default(*args: Any, **kwargs: Any) -> Runner:
    import onnxruntime as ort

    from ..runners.onnxruntime import OnnxRuntimeRunner

    class OnnxRuntimeDefault(OnnxRuntimeRunner):
        """``ort.InferenceSession(path)``: default SessionOptions (ORT picks its threads), same export."""

        def _prepare_impl(self) -> None:
            self._options = ort.SessionOptions()

        def _describe_impl(self) -> dict[str, Any]:
            return {**super()._describe_impl(), "session_options": "default",
                    "graph_optimization_level": str(self._options.graph_optimization_level),
                    "intra_op_num_threads": self._options.intra_op_num_threads}

    return OnnxRuntimeDefault(*args, **kwargs)


def _openvino_default(*args: Any, **kwargs: Any) -> Runner:
    from ..runners.openvino import _FROM_OV, _HINT, OpenVinoRunner

    class OpenVinoDefault(OpenVinoRunner):
        """``core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": ...})`` on the export as it is."""

        rewrite_graph = False  # the model exported as timm builds it, as a user's own export is

        def _prepare_impl(self) -> None:
            self._blob_cache = ""  # type: ignore[assignment]  # no blob cache: describe() records None
            self._config = {"INFERENCE_PRECISION_HINT": _HINT[self.dtype]}

        def _compile(self, onnx_path: Any, part_shape: tuple[int, ...]) -> Any:
            if part_shape[0] not in self._compiled:
                compiled = self._core.compile_model(self._core.read_model(str(onnx_path)), "CPU", self._config)
                effective = _FROM_OV.get(compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name())
                if effective != self.dtype:
                    raise RuntimeUnavailableError(f"openvino default {self.dtype}: compiled in {effective}")
                self._effective, self._compiled[part_shape[0]] = effective, compiled
            return self._compiled[part_shape[0]]

    return OpenVinoDefault(*args, **kwargs)


def _torch_recipe(compiled: bool, inductor_config: dict[str, Any] | None = None) -> Callable[..., Runner]:
    def build(*args: Any, **kwargs: Any) -> Runner:
        return TorchRecipeRunner(*args, compiled=compiled, inductor_config=inductor_config, **kwargs)
    return build


@dataclass(frozen=True)
class Recipe:
    name: str
    runtime: str  # the engine, for grouping and the plot
    dtypes: tuple[str, ...] | None  # None: every dtype
    build: Callable[..., Runner]
    autocast: bool = True  # whether a bf16/fp16 run of it is under torch.autocast (said in its label)
    channels_last: bool = False

    def label(self, dtype: str) -> str:
        return f"peer: {self.name}" + (" autocast" if self.autocast and dtype != "fp32" else "") + f" {dtype}"


RECIPES: dict[str, Recipe] = {r.name: r for r in (
    Recipe("timm eager", "torch", ("bf16", "fp16"), _torch_recipe(False)),  # fp32: the baseline row
    Recipe("torch.compile default", "torch", None, _torch_recipe(True)),
    Recipe("torch.compile freezing channels-last", "torch", None, _torch_recipe(True, {"freezing": True}),
           channels_last=True),
    Recipe("onnxruntime default", "onnxruntime", ("fp32", "fp16"), _onnxruntime_default, autocast=False),
    Recipe("openvino default", "openvino", None, _openvino_default, autocast=False),
)}


def peer_names(dtypes: tuple[str, ...]) -> list[tuple[str, str]]:
    """(recipe, dtype) for every peer that applies to one of ``dtypes``, dtype by dtype.

    No peer for a quantised dtype (int8): what a user writes by hand is the engine's own quantiser
    (``quantize_static``, ``nncf.quantize``, PT2E), the very call accelport makes, so a peer row would time the same
    thing twice; int8 is compared with the eager fp32 baseline instead (issue 13's int8 targets).
    """
    return [(name, dtype) for dtype in dtypes if dtype not in QUANTIZED_DTYPES for name, recipe in RECIPES.items()
            if recipe.dtypes is None or dtype in recipe.dtypes]


def create_peer_runner(name: str, model: torch.nn.Module, device: torch.device, dtype: str, *, threads: int | None,
                       cache_dir: str | None) -> Runner:
    """The peer ``name``'s runner; an engine that is not installed is a RuntimeUnavailableError (an
    'unsupported' row), as for accelport's own runtimes. The thread count applies where the recipe has one
    (torch's pool); ONNX Runtime and OpenVINO keep their own defaults, as a user gets them."""
    try:
        recipe = RECIPES[name]
        return recipe.build(model, device, dtype, recipe.channels_last, threads=threads, cache_dir=cache_dir)
    except ImportError as exc:
        raise RuntimeUnavailableError(f"peer {name}: {exc}") from None


# The comparison ----------------------------------------------------------------------------------------------
def _passing(row: dict[str, Any]) -> bool:
    return row["status"] == "ok" and bool(row["parity"]["passed"])


def paired_ratio(a: dict[str, Any], b: dict[str, Any]) -> tuple[float, list[float]]:
    """Median over rounds of a's round p50 / b's round p50 (rounds where both were timed); the p50 ratio when
    neither has rounds. Returns (median, per-round ratios)."""
    rounds = [x / y for x, y in zip(a.get("round_p50_ms") or [], b.get("round_p50_ms") or [], strict=False) if y > 0]
    if not rounds:
        rounds = [a["latency"]["p50_ms"] / b["latency"]["p50_ms"]]
    return float(statistics.median(rounds)), rounds


def compare_with_peers(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (dtype, batch) that has peer rows: the pick (fastest non-peer row passing parity), the best peer
    (fastest peer row, or the eager fp32 baseline, passing parity) and ``ratio_to_best_peer`` (paired; < 1:
    the pick is faster)."""
    keys = dict.fromkeys((r["dtype"], r["batch_size"]) for r in rows if r.get("kind") == "peer")
    comparison = []
    for dtype, batch_size in keys:
        here = [r for r in rows if r["dtype"] == dtype and r["batch_size"] == batch_size and _passing(r)]
        own = [r for r in here if r.get("kind") != "peer"]
        peers = [r for r in here if r.get("kind") in ("peer", "baseline")]
        pick = min(own, key=lambda r: r["latency"]["p50_ms"], default=None)
        best = min(peers, key=lambda r: r["latency"]["p50_ms"], default=None)
        entry: dict[str, Any] = {"dtype": dtype, "batch_size": batch_size, "pick": pick and pick["label"],
                                 "pick_p50_ms": pick and pick["latency"]["p50_ms"], "best_peer": best and best["label"],
                                 "best_peer_p50_ms": best and best["latency"]["p50_ms"], "ratio_to_best_peer": None,
                                 "round_ratios": [], "at_least_as_fast": None}
        if pick and best:
            ratio, rounds = paired_ratio(pick, best)
            entry.update(ratio_to_best_peer=ratio, round_ratios=rounds, at_least_as_fast=ratio <= 1.0)
        comparison.append(entry)
    return comparison


def comparison_for(document: dict[str, Any], dtype: str, batch_size: int) -> dict[str, Any] | None:
    return next((c for c in document.get("peer_comparison") or [] if c["dtype"] == dtype
                 and c["batch_size"] == batch_size), None)


def peer_summary(entry: dict[str, Any]) -> str:
    """``"; 0.83x the best peer (peer: ...)"`` for one comparison entry, or "" when there is none."""
    if not entry or entry.get("ratio_to_best_peer") is None:
        return ""
    split = " (the timing rounds disagree: level within this run's noise)" if rounds_disagree(
        entry.get("round_ratios") or []) else ""
    ratio = entry["ratio_to_best_peer"]
    faster = "" if split or ratio <= 1 else ", the peer faster"
    return f"; {ratio:.2f}x the latency of the best hand-written peer ({entry['best_peer']}{faster}){split}"
