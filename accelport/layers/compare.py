"""The layer comparison itself, over models and tensors: rows per module call, per mode, and the first divergence.

Rows are in completion order (the order in which module outputs are produced), so a leaf comes before the block
that contains it: the first divergent row is the innermost module where the error starts, not its stage.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from ..criteria import Criteria
from ..errors import WeightsError
from ..formatting import listed
from .capture import MODEL_ROW, Rows, TargetCast, module_depth, watched_modules
from .chained import compare_chained
from .config import MODES
from .engine import FOLDED_INTO, EngineChained
from .isolated import compare_isolated
from .memory import MemoryMonitor, MemoryReport
from .stats import ModuleStats

_logger = logging.getLogger(__name__)

DIVERGENCE_RULE = (
    "a module diverges when its output fails a check that fails `accelport run` (the same judge, criteria.judge, at "
    "the target's precision with --criterion overrides): worst image's cosine below min_cosine or relative L2 above "
    "max_rel_l2, share of elements within elem_rtol below min_within_share, NaN/Inf on either side; or its shape "
    "differs. The first divergent module is the first such row in completion order."
)


@dataclass
class LayerRow:
    """One module call: what it is, and its accumulated metrics in each mode."""

    key: str  # module name, with #2, #3 for repeated calls in one forward
    module_type: str
    depth: int
    is_leaf: bool
    output_shape: list[int] | None = None
    stats: dict[str, ModuleStats] = field(default_factory=dict)
    note: str | None = None
    owns_parameters: bool = True  # parameters of its own, not only its children's (BatchNormAct2d: yes; ReLU: no)

    def to_json(self, index: int, modes: tuple[str, ...], criteria: Criteria) -> dict[str, Any]:
        entry: dict[str, Any] = {"index": index, "module": self.key, "type": self.module_type, "depth": self.depth,
                                 "leaf": self.is_leaf, "output_shape": self.output_shape, "note": self.note}
        for mode in modes:
            stats = self.stats.get(mode)
            if stats is None:
                entry[mode] = None
                continue
            reason = stats.divergence(criteria)
            entry[mode] = {
                "divergent": reason is not None, "reason": reason,
                "worst_sample_rel_l2": stats.worst_rel_l2, "worst_rel_l2_image": stats.worst_rel_l2_image,
                "worst_sample_cosine": stats.worst_cosine, "worst_cosine_image": stats.worst_cosine_image,
                "new_nonfinite": stats.new_nonfinite,
                "metrics": None if stats.shape_mismatch else stats.metrics().to_json(),
            }
        return entry


@dataclass
class LayerComparison:
    """Every watched module call of the reference, with its metrics per mode, judged under ``criteria``."""

    rows: list[LayerRow]
    modes: tuple[str, ...]
    criteria: Criteria
    num_images: int
    memory: MemoryReport
    model_outputs: tuple[np.ndarray, np.ndarray] | None = None  # the (model) row, reference and target, all images

    def first_divergent(self, mode: str) -> tuple[int, LayerRow] | None:
        for index, row in enumerate(self.rows):
            stats = row.stats.get(mode)
            if stats is not None and stats.divergence(self.criteria) is not None:
                return self._owner(index, row) if mode == "chained" else (index, row)
        return None

    def _owner(self, index: int, row: LayerRow) -> tuple[int, LayerRow]:
        """Chained: a parameter-free leaf (an activation) that diverges first got the error from its parent's own
        code, e.g. timm's BatchNormAct2d normalises with its own weight and bias, then calls its child ``act``: the
        parent is named, the module whose weights are at fault, not the activation after them."""
        if not row.is_leaf or row.owns_parameters or "." not in row.key:
            return index, row
        parent = row.key.split("#")[0].rsplit(".", 1)[0]
        for later in range(index + 1, len(self.rows)):  # completion order: the parent comes after its children
            if self.rows[later].key.split("#")[0] == parent:
                return (later, self.rows[later]) if self.rows[later].owns_parameters else (index, row)
        return index, row

    def fastest_growth(self, mode: str) -> dict[str, Any] | None:
        """Where the error grows most when no module crosses a limit: chained, the largest rise of the worst-image
        rel L2 over every earlier row's; isolated, the largest own error. None where no error grows anywhere (a
        target identical to the reference): naming the first row then would point at nothing."""
        best: dict[str, Any] | None = None
        running = 0.0
        for index, row in enumerate(self.rows):
            stats = row.stats.get(mode)
            if stats is None or stats.shape_mismatch or math.isnan(stats.worst_rel_l2):
                continue
            growth = stats.worst_rel_l2 - running if mode == "chained" else stats.worst_rel_l2
            if best is None or growth > best["growth"]:
                best = {"index": index, "module": row.key, "type": row.module_type, "growth": growth,
                        "worst_sample_rel_l2": stats.worst_rel_l2}
            running = max(running, stats.worst_rel_l2)
        return best if best is not None and best["growth"] > 0 else None

    def compared(self, mode: str) -> int:
        """Rows with metrics in ``mode``: every row on eager; on an engine, those it has a tensor for."""
        return sum(1 for row in self.rows if row.stats.get(mode) is not None)

    def within_text(self, mode: str) -> str:
        """"124 modules" or "122 of 124 modules compared" (the others' rows say why they have no tensor)."""
        total, compared = len(self.rows), self.compared(mode)
        return f"{total} modules" if compared == total else f"{compared} of {total} modules compared"

    @property
    def diverged(self) -> bool:
        return any(self.first_divergent(mode) is not None for mode in self.modes)

    def folded_words(self, key: str) -> str:
        """" (with <modules> folded into it)" for the modules the engine folded into ``key``, else "": its tensor is
        their computation too, so a divergence there may be theirs (OpenVINO folds a convolution into its
        BatchNorm: a faulty conv shows at the norm)."""
        note = "not compared: " + FOLDED_INTO.format(key)
        folded = [row.key for row in self.rows if row.note == note]
        return f" (with {', '.join(folded)} folded into it)" if folded else ""

    def module_text(self, key: str) -> str:
        """``key`` with the modules folded into it (``folded_words``)."""
        return key + self.folded_words(key)

    def to_json(self) -> dict[str, Any]:
        rows = [row.to_json(i, self.modes, self.criteria) for i, row in enumerate(self.rows)]
        first: dict[str, Any] = {}
        for mode in self.modes:
            found = self.first_divergent(mode)
            first[mode] = None if found is None else {
                key: rows[found[0]][key] for key in ("index", "module", "type")} | {
                key: rows[found[0]][mode][key] for key in ("reason", "worst_sample_rel_l2", "worst_sample_cosine")}
        return {"modes": list(self.modes), "criteria": self.criteria.to_json(), "divergence_rule": DIVERGENCE_RULE,
                "fastest_growth": {mode: self.fastest_growth(mode) for mode in self.modes},
                "num_images": self.num_images, "first_divergent": first, "memory": self.memory.to_json(),
                "modules": rows}


class _Collector:
    """Receives (reference, target) rows from either mode and adds them to the module's running metrics."""

    def __init__(self, memory: MemoryMonitor, elem_rtol: float) -> None:
        self.rows: dict[str, LayerRow] = {}
        self.mode = ""
        self.first_image = 0
        self._memory = memory
        self._elem_rtol = elem_rtol
        self.outputs: dict[str, tuple[list[torch.Tensor], list[torch.Tensor]]] = {}  # mode -> the (model) row

    def model_outputs(self) -> tuple[np.ndarray, np.ndarray] | None:
        """The whole model's outputs, as ``run`` compares them: chained (the target's own forward) when it ran."""
        for mode in ("chained", "isolated"):
            if mode in self.outputs:
                reference, target = self.outputs[mode]
                return torch.cat(reference).numpy(), torch.cat(target).numpy()
        return None

    def _row(self, key: str, name: str, module: nn.Module) -> LayerRow:
        row = self.rows.get(key)
        if row is None:
            is_leaf = name != MODEL_ROW and next(module.children(), None) is None
            row = self.rows[key] = LayerRow(key, type(module).__name__, module_depth(name), is_leaf,
                                            owns_parameters=next(module.parameters(recurse=False), None) is not None)
        return row

    def not_exposed(self, key: str, name: str, module: nn.Module, reason: str) -> None:
        """A module call the target's engine has no tensor for: a row with the reason, and no metrics."""
        self._row(key, name, module).note = f"not compared: {reason}"

    def __call__(self, key: str, name: str, module: nn.Module, reference: Rows | None, target: Rows | None) -> None:
        row = self._row(key, name, module)
        if reference is None:
            row.note = "output holds no tensor with the batch as first dimension: not compared"
            return
        row.output_shape = row.output_shape or reference.shape
        self._memory.output_seen(reference.nbytes)
        stats = row.stats.setdefault(self.mode, ModuleStats(elem_rtol=self._elem_rtol))
        if target is None:
            stats.shape_mismatch = "the target's output holds no tensor with the batch as first dimension"
            return
        stats.update(reference.values, target.values, self.first_image)
        if key == MODEL_ROW and reference.values.shape == target.values.shape:  # small: logits or pooled features
            pair = self.outputs.setdefault(self.mode, ([], []))
            pair[0].append(reference.values.clone())
            pair[1].append(target.values.clone())


def compare_engine_layers(reference: nn.Module, runner: Any, batches: Iterable[torch.Tensor], criteria: Criteria,
                          memory: MemoryMonitor | None = None) -> LayerComparison:
    """Chained comparison of ``reference`` (CPU fp32, eval) with an engine runner's program (OpenVINO, ONNX
    Runtime) over host fp32 ``batches``: every module the engine's graph names (layers/engine.py), the others
    listed as not compared."""
    memory = memory or MemoryMonitor(torch.device("cpu")).start()
    collector = _Collector(memory, criteria.elem_rtol)
    collector.mode = "chained"
    session = EngineChained(reference, runner, memory)
    for batch in batches:
        memory.pass_started(batch.shape[0])
        session.compare(batch, collector, collector.not_exposed)
        collector.first_image += batch.shape[0]
        _logger.info("layers: %d image(s) compared", collector.first_image)
    return LayerComparison(list(collector.rows.values()), ("chained",), criteria, collector.first_image,
                           memory.report(), collector.model_outputs())


def _target_modules(target: nn.Module, names: Iterable[str]) -> dict[str, nn.Module]:
    available = dict(target.named_modules())
    available[MODEL_ROW] = target
    missing = [name for name in names if name not in available]
    if missing:
        raise WeightsError(f"layers: the target model has no module {listed(missing)}: "
                           "it must be the same architecture as the reference")
    return {name: available[name] for name in names}


def compare_layers(
    reference: nn.Module,
    target: nn.Module,
    batches: Iterable[torch.Tensor],
    criteria: Criteria,
    modes: tuple[str, ...] = MODES,
    cast: Callable[[Any], Any] | None = None,
    target_input: Callable[[torch.Tensor], Any] | None = None,
    device: torch.device | None = None,
    memory: MemoryMonitor | None = None,
) -> LayerComparison:
    """Compare every module of ``target`` with ``reference`` (CPU fp32, eval) over host fp32 ``batches``.

    ``cast`` moves reference values to the target (default: the device and dtype of the target's parameters);
    ``target_input`` prepares a whole batch for it (default: ``cast``; ``run_layers`` passes the runner's own).
    """
    if not modes or any(mode not in MODES for mode in modes):
        raise ValueError(f"compare_layers: modes {modes!r}: choose from {MODES}")
    if target is reference:
        raise ValueError("compare_layers: the target must be a separate module object (hooks are per module)")
    cast = cast or TargetCast.of(target)
    target_input = target_input or cast
    device = device or getattr(cast, "device", None) or torch.device("cpu")
    watched = watched_modules(reference)
    target_watched = _target_modules(target, watched)
    memory = memory or MemoryMonitor(device).start()
    collector = _Collector(memory, criteria.elem_rtol)
    for batch in batches:
        for mode in modes:
            collector.mode = mode
            memory.pass_started(batch.shape[0])
            if mode == "chained":
                compare_chained(reference, target, batch, target_input(batch), watched, target_watched, collector,
                                device, memory)
            else:
                compare_isolated(reference, batch, watched, target_watched, cast, collector, memory)
        collector.first_image += batch.shape[0]
        _logger.info("layers: %d image(s) compared", collector.first_image)
    return LayerComparison(list(collector.rows.values()), tuple(modes), criteria, collector.first_image,
                           memory.report(), collector.model_outputs())
