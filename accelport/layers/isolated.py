"""Isolated mode: each target module is fed the reference's input to that module, so its error is its own.

One reference forward runs with a pre-hook that copies each module's inputs and a post-hook that runs the
target's module of the same name on them (moved to the target's device and dtype) and compares the two
outputs. Copies live only while their module runs: at most one per nesting level (7 for ConvNeXt) at once.
A container (a stage, a block) is re-run whole on the target from its reference input, so its row is the
error of that sub-network alone; the cost is about one target forward per nesting level.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from functools import partial
from typing import Any

import torch
from torch import nn

from .capture import CallNames, Rows, clone_tensors, forward_with_hooks, output_rows, tensor_bytes
from .chained import Consumer
from .memory import MemoryMonitor


def compare_isolated(reference: nn.Module, reference_input: torch.Tensor, watched: dict[str, nn.Module],
                     target_watched: dict[str, nn.Module], cast: Callable[[Any], Any], consume: Consumer,
                     memory: MemoryMonitor) -> None:
    """One batch: ``consume(key, name, module, reference, target)`` for each module call, in completion order."""
    batch_size = reference_input.shape[0]
    names = CallNames()
    pending: dict[str, list[tuple[str, Any, Any, int]]] = defaultdict(list)  # per module: calls not yet finished

    def before(name: str, module: nn.Module, args: Any, kwargs: Any) -> None:
        inputs = clone_tensors((args, kwargs))
        nbytes = tensor_bytes(inputs)
        memory.hold(nbytes)
        pending[name].append((names.next(name), inputs[0], inputs[1], nbytes))

    def after(name: str, module: nn.Module, args: Any, kwargs: Any, output: Any) -> None:
        key, saved_args, saved_kwargs, nbytes = pending[name].pop()
        reference_rows = output_rows(output, batch_size, copy=False)
        target_rows: Rows | None = None
        try:
            target_output = target_watched[name](*cast(saved_args), **cast(saved_kwargs))
            target_rows = output_rows(target_output, batch_size, copy=False)
            del target_output
        finally:
            memory.release(nbytes)
        if target_rows is not None:
            memory.hold(target_rows.nbytes)
        try:
            consume(key, name, module, reference_rows, target_rows)
        finally:
            if target_rows is not None:
                memory.release(target_rows.nbytes)

    handles = []
    for name, module in watched.items():
        handles.append(module.register_forward_pre_hook(partial(before, name), with_kwargs=True))
        handles.append(module.register_forward_hook(partial(after, name), with_kwargs=True))
    forward_with_hooks(reference, reference_input, handles)
