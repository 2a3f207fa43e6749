"""Chained mode on an engine target (OpenVINO, ONNX Runtime): the engine's own tensors at module boundaries, against
the reference's modules.

The target is the runner's own program (the same model file: the fp32 export, NNCF's int8 model or ONNX Runtime's
QDQ model; the same precision, threads and providers). ``engine_taps`` finds, by the names the converters keep,
which of its tensors is each module's output; those tensors are added as outputs of a one-off compilation (or
session) and read for each batch, then the reference's forward compares its module outputs with them as eager
chained mode does. The ``(model)`` row is the runner's own untapped output, the one ``accelport run`` judges.
Isolated mode does not exist here: a compiled engine program cannot be fed the reference's input at one module.

A runner that takes part gives ``graph_ops(shape)`` (its graph as ``runners.graph_ops.GraphOp`` s) and
``tensors_at(input, places)`` (the values at those places for one batch).

Conversion folds a BatchNorm into the convolution or linear before it (the ONNX exporter and OpenVINO both do):
the tensor named for the convolution then holds the BatchNorm's output. Such pairs are found in the reference's
forward (the BatchNorm reads exactly the convolution's output): the convolution (and any container it ends) is
reported as folded into the norm, and the tensor is given to the norm unless it has one of its own (timm's
BatchNormAct2d: its activation's output).
"""

from __future__ import annotations

import logging
import weakref
from collections import Counter
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import RuntimeUnavailableError
from .capture import MODEL_ROW, CallNames, Rows, forward_with_hooks, output_rows, watched_modules
from .chained import Consumer
from .engine_taps import GraphOp, find_module_outputs
from .memory import MemoryMonitor

_logger = logging.getLogger(__name__)

# the reason of a module with no tensor because the conversion folded it into the norm after it
FOLDED_INTO = "folded into {} by the conversion: no tensor of its own"

NotExposed = Callable[[str, str, nn.Module, str], None]  # key, module name, module, why the engine has no tensor
_FOLDABLE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
_NORMS = (nn.modules.batchnorm._BatchNorm,)


def survey(reference: nn.Module, batch: torch.Tensor, watched: dict[str, nn.Module]) -> tuple[Counter[str],
                                                                                              dict[str, str]]:
    """One reference forward: how often each module is called, and ``{convolution: batch norm}`` for each norm
    that reads exactly one convolution's (or linear's) output, the pairs conversion folds."""
    calls: Counter[str] = Counter()
    produced_by: dict[int, tuple[str, weakref.ref]] = {}  # id() of a freed tensor is reused: the weakref tells
    folds: dict[str, str] = {}

    def after(name: str, module: nn.Module, args: Any, output: Any) -> None:
        calls[name] += 1
        if isinstance(module, _NORMS) and args and isinstance(args[0], torch.Tensor):
            entry = produced_by.get(id(args[0]))
            if entry is not None and entry[1]() is args[0]:
                folds[entry[0]] = name
        if isinstance(module, _FOLDABLE) and isinstance(output, torch.Tensor):
            produced_by[id(output)] = (name, weakref.ref(output))

    forward_with_hooks(reference, batch, [m.register_forward_hook(partial(after, n)) for n, m in watched.items()
                                          if n != MODEL_ROW])
    return calls, folds


class EngineTensors:
    """Which engine tensor stands for which module, and why the others have none (``unexposed``)."""

    def __init__(self, ops: list[GraphOp], calls: Counter[str], folds: dict[str, str]) -> None:
        candidates = [name for name, count in calls.items() if count == 1]
        taps = find_module_outputs(ops, candidates)
        self.unexposed: dict[str, str] = {
            name: "called more than once in a forward: the engine's tensors of its calls share one name"
            for name, count in calls.items() if count > 1}
        for convolution, norm in folds.items():
            if convolution in taps:  # its tensor holds the norm's output; a BatchNormAct2d may have its own (act)
                place = taps[convolution]
                taps.setdefault(norm, place)
                for name in [name for name, tap in taps.items() if tap == place and name != norm]:
                    del taps[name]  # the convolution and any container it ends (its output is the norm's input)
                    self.unexposed[name] = FOLDED_INTO.format(norm)
        for name in candidates:
            if name not in taps:
                self.unexposed.setdefault(name, "no tensor of the engine's graph is this module's output (fused, "
                                                "renamed or left unnamed by the conversion)")
        self.places = taps

    def reason(self, name: str) -> str:
        return self.unexposed.get(name, "no tensor of the engine's graph is this module's output")


class EngineChained:
    """Chained comparison of one reference with one engine runner, batch by batch; the engine's tensors are
    mapped to modules on the first batch."""

    def __init__(self, reference: nn.Module, runner: Any, memory: MemoryMonitor) -> None:
        self._reference, self._runner, self._memory = reference, runner, memory
        self._watched = watched_modules(reference)
        self.tensors: EngineTensors | None = None
        self._output_place: tuple[str, int] | None = None  # the model's output in the engine's graph (found once)

    def compare(self, batch: torch.Tensor, consume: Consumer, not_exposed: NotExposed) -> None:
        """``consume(key, name, module, reference, target)`` for every module the engine exposes and the
        ``(model)`` row, ``not_exposed(key, name, module, reason)`` for the rest."""
        runner = self._runner
        device_input = runner.to_device(batch)
        model_output = runner.to_host(runner.forward(device_input))  # the runner's own program: run's output
        if self.tensors is None:
            calls, folds = survey(self._reference, batch, self._watched)
            self.tensors = EngineTensors(runner.graph_ops(tuple(device_input.shape)), calls, folds)
            self._output_place = runner.output_place(tuple(device_input.shape))
            _logger.info("layers: %s exposes %d of %d module outputs", runner.name, len(self.tensors.places),
                         len(calls))
        values = runner.tensors_at(device_input, {**self.tensors.places, _TAPPED_OUTPUT: self._output_place})
        _check_tapped_program(runner.name, values.pop(_TAPPED_OUTPUT), model_output.numpy())
        held = sum(value.nbytes for value in values.values())
        self._memory.hold(held)
        try:
            _reference_pass(self._reference, batch, self._watched, values, model_output, self.tensors, consume,
                            not_exposed)
        finally:
            self._memory.release(held)


_TAPPED_OUTPUT = "(the tapped program's output)"
TAPPED_LIMIT = 0.1  # relative L2 between the tapped program's output and the runner's own: far above any fusion's


def _check_tapped_program(runtime: str, tapped: np.ndarray, own: np.ndarray) -> None:
    """Refuse module tensors read from a program that computes another model output than the runner's own.

    Adding outputs may change which layers the engine fuses, by a rounding's worth; OpenVINO 2026.4 computed the
    int8 EdgeNeXt with its module outputs added wrongly from the second stage on (its output rel L2 1.0 against
    the untapped program's), and layers named a module of a correct port."""
    tapped, own = tapped.reshape(own.shape).astype(np.float64), own.astype(np.float64)
    scale = float(np.linalg.norm(own))
    error = float(np.linalg.norm(tapped - own)) / scale if scale > 0 else float(np.linalg.norm(tapped))
    if not error <= TAPPED_LIMIT:  # NaN included
        raise RuntimeUnavailableError(
            f"layers --runtime {runtime}: the engine's program with the module outputs added computes another model "
            f"output than its own program (relative L2 {error:.3g} between them, more than {TAPPED_LIMIT} that "
            "a changed fusion could explain): its module tensors cannot localise anything here. The model's own "
            "output is judged by `accelport run`; localise with another engine (--runtime onnxruntime, or eager "
            "for a float dtype), or a weight or layout fault (what run's structural proof finds) in strict fp32: "
            "the same command with --dtype fp32, or --runtime eager --dtype fp32")


def _reference_pass(reference: nn.Module, batch: torch.Tensor, watched: dict[str, nn.Module],
                    values: dict[str, np.ndarray], model_output: torch.Tensor, tensors: EngineTensors,
                    consume: Consumer, not_exposed: NotExposed) -> None:
    batch_size = batch.shape[0]
    names = CallNames()

    def after(name: str, module: nn.Module, args: Any, output: Any) -> None:
        key = names.next(name)
        reference_rows = output_rows(output, batch_size, copy=False)
        if name == MODEL_ROW:
            consume(key, name, module, reference_rows, output_rows(model_output, batch_size, copy=False))
        elif name in values and key == name:
            value = values[name]
            target = Rows(torch.from_numpy(value).reshape(batch_size, -1), list(value.shape[1:]))
            if reference_rows is not None and target.values.shape != reference_rows.values.shape:
                not_exposed(key, name, module, f"the engine's tensor for it has {target.values.shape[1]} elements "
                                               f"per image, the module's output {reference_rows.values.shape[1]}")
            else:
                consume(key, name, module, reference_rows, target)
        else:
            not_exposed(key, name, module, tensors.reason(name))

    forward_with_hooks(reference, batch, [m.register_forward_hook(partial(after, n)) for n, m in watched.items()])
