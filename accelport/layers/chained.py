"""Chained mode: both sides run their own full forward, in lockstep, and each module output is compared as it appears.

The target's forward runs in a worker thread whose forward hooks publish each output (as a host copy) and pause;
the reference's forward runs in the calling thread and its hooks compare their output with the published one,
drop both, and let the target compute its next module before the reference computes its own. The two forwards
strictly take turns: one target output is held at a time, beyond what each forward keeps by itself, and the two
sides never compete for the CPU (two OpenMP teams at once slow a shared CPU down many times).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from functools import partial
from typing import Any

import torch
from torch import nn

from ..errors import RuntimeUnavailableError
from .capture import CallNames, Rows, output_rows
from .memory import MemoryMonitor

_logger = logging.getLogger(__name__)

Consumer = Callable[[str, str, nn.Module, Rows | None, Rows | None], None]  # key, module name, module, both sides
_DONE = object()
_POLL_S = 0.1


class _Aborted(Exception):
    """Unwinds the target's forward when the reference side has stopped."""


def _bind_device(device: torch.device) -> None:
    """The worker thread starts on the default device index; make it the target's."""
    if device.type == "cpu" or device.index is None:
        return
    try:
        if (torch.accelerator.is_available()
                and getattr(torch.accelerator.current_accelerator(), "type", None) == device.type):
            torch.accelerator.set_device_index(device.index)
    except Exception as exc:  # tensors carry their device anyway; this only avoids touching device 0
        _logger.debug("could not set the current %s device in the worker thread: %r", device.type, exc)


class _TargetForward:
    """Runs the target's forward in a thread that pauses after each watched module until it is told to go on."""

    def __init__(self, model: nn.Module, model_input: Any, batch_size: int, device: torch.device,
                 memory: MemoryMonitor) -> None:
        self._thread = threading.Thread(target=self._run, name="accelport-layers-target", daemon=True)
        self._model, self._input, self._batch_size, self._device = model, model_input, batch_size, device
        self._memory = memory
        self._ready, self._resume, self._stop = threading.Event(), threading.Event(), threading.Event()
        self._item: Any = None
        self._names = CallNames()
        self.error: BaseException | None = None

    # Worker side -----------------------------------------------------------------------------------------
    def hook(self, name: str, module: nn.Module, args: Any, output: Any) -> None:
        key = self._names.next(name)
        rows = output_rows(output, self._batch_size, copy=True)
        if rows is not None:
            self._memory.hold(rows.nbytes)
        self._resume.clear()
        self._item = (key, rows)
        self._ready.set()
        while not self._resume.wait(_POLL_S):
            if self._stop.is_set():
                raise _Aborted

    def _run(self) -> None:
        try:
            _bind_device(self._device)
            with torch.inference_mode():
                self._model(self._input)
            self._item = _DONE
        except _Aborted:
            pass
        except BaseException as exc:  # handed to the calling thread, which re-raises it
            self.error = exc
        finally:
            self._ready.set()

    # Calling side ----------------------------------------------------------------------------------------
    def start(self) -> Any:
        """Start the target's forward; return its first module output (or _DONE)."""
        self._thread.start()
        return self._next()

    def advance(self) -> Any:
        """Let the target compute its next module; return that output (or _DONE)."""
        self._resume.set()
        return self._next()

    def _next(self) -> Any:
        while not self._ready.wait(_POLL_S):
            if not self._thread.is_alive() and not self._ready.is_set():
                raise RuntimeUnavailableError("layers: the target's forward stopped without a result")
        self._ready.clear()
        if self.error is not None:
            raise self.error
        return self._item

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def _order_error(reference_key: str, target_key: str) -> RuntimeUnavailableError:
    return RuntimeUnavailableError(
        f"layers: the target called {target_key} where the reference called {reference_key}; chained mode needs "
        "both forwards to call the same modules in the same order (same architecture, eager execution)")


def compare_chained(reference: nn.Module, target: nn.Module, reference_input: torch.Tensor, target_input: Any,
                    watched: dict[str, nn.Module], target_watched: dict[str, nn.Module], consume: Consumer,
                    device: torch.device, memory: MemoryMonitor) -> None:
    """One batch through both models in lockstep; ``consume(key, name, module, reference, target)`` per call."""
    batch_size = reference_input.shape[0]
    worker = _TargetForward(target, target_input, batch_size, device, memory)
    names = CallNames()
    current: Any = None

    def reference_hook(name: str, module: nn.Module, args: Any, output: Any) -> None:
        nonlocal current
        key = names.next(name)
        if current is _DONE:
            raise RuntimeUnavailableError(f"layers: the target's forward ended before module {key}")
        target_key, target_rows = current
        if target_key != key:
            raise _order_error(key, target_key)
        reference_rows = output_rows(output, batch_size, copy=False)  # compared now, before the forward goes on
        try:
            consume(key, name, module, reference_rows, target_rows)
        finally:
            if target_rows is not None:
                memory.release(target_rows.nbytes)
        current = worker.advance()

    handles = [m.register_forward_hook(partial(worker.hook, n)) for n, m in target_watched.items()]
    handles += [m.register_forward_hook(partial(reference_hook, n)) for n, m in watched.items()]
    try:
        current = worker.start()
        with torch.inference_mode():
            reference(reference_input)
        if current is not _DONE:
            raise _order_error("(end of forward)", current[0])
    finally:
        worker.stop()
        for handle in handles:
            handle.remove()
