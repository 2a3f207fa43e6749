"""Which modules a layer comparison watches, what each call is named, and how values cross between the two sides."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

MODEL_ROW = "(model)"  # the row of the whole model's output: the tensor `accelport run` compares

# Modules that return their input unchanged in eval mode: a row for them would repeat the previous row.
_PASS_THROUGH: tuple[type, ...] = (nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
                                   nn.FeatureAlphaDropout)


def _pass_through_types() -> tuple[type, ...]:
    try:
        from timm.layers import DropPath
    except ImportError:  # timm is a dependency, but the capture works on any torch module
        return _PASS_THROUGH
    return (*_PASS_THROUGH, DropPath)


def watched_modules(model: nn.Module) -> dict[str, nn.Module]:
    """Every named module except eval-mode pass-throughs (Identity, dropout, drop-path), and the model itself."""
    skip = _pass_through_types()
    watched = {name: module for name, module in model.named_modules() if name and not isinstance(module, skip)}
    watched[MODEL_ROW] = model
    return watched


def module_depth(name: str) -> int:
    """Nesting level: 0 for the whole model, 1 for ``stem``, 2 for ``stages.2``, 5 for ``stages.2.blocks.1.mlp``."""
    return 0 if name == MODEL_ROW else name.count(".") + 1


class CallNames:
    """Names calls in one forward: ``name`` for a module's first call, ``name#2``, ``name#3`` for repeated ones."""

    def __init__(self) -> None:
        self._calls: Counter[str] = Counter()

    def next(self, name: str) -> str:
        self._calls[name] += 1
        count = self._calls[name]
        return name if count == 1 else f"{name}#{count}"


def forward_with_hooks(model: nn.Module, batch: torch.Tensor, handles: list[Any]) -> Any:
    """One inference-mode forward of ``model`` with the hooks of ``handles`` in place; they are removed
    afterwards, whatever the forward raised."""
    try:
        with torch.inference_mode():
            return model(batch)
    finally:
        for handle in handles:
            handle.remove()


def _tensors(value: Any) -> Iterator[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (tuple, list)):
        for item in value:
            yield from _tensors(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _tensors(item)


@dataclass(frozen=True)
class Rows:
    """A module output as CPU fp32 ``[N, elements]`` (tensors of a tuple concatenated per image), and its shape."""

    values: torch.Tensor
    shape: list[int]  # per image, of the first tensor

    @property
    def nbytes(self) -> int:
        return self.values.numel() * self.values.element_size()


def output_rows(output: Any, batch_size: int, copy: bool) -> Rows | None:
    """Comparable rows of a module output, or None when it holds no tensor with the batch as leading dimension.

    ``copy`` forces a host copy even where ``.to`` would return the tensor itself (CPU fp32): needed when the
    forward goes on while the rows wait, since a later in-place op could change the tensor.
    """
    leaves = list(_tensors(output))
    if not leaves or any(t.dim() == 0 or t.shape[0] != batch_size for t in leaves):
        return None
    rows = [t.detach().to("cpu", torch.float32, copy=copy).reshape(batch_size, -1) for t in leaves]
    return Rows(rows[0] if len(rows) == 1 else torch.cat(rows, 1), list(leaves[0].shape[1:]))


def clone_tensors(value: Any) -> Any:
    """A private copy of a module's inputs (a later in-place op in the reference must not change them)."""
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, (tuple, list)):
        return type(value)(clone_tensors(v) for v in value)
    if isinstance(value, dict):
        return {k: clone_tensors(v) for k, v in value.items()}
    return value


def tensor_bytes(value: Any) -> int:
    return sum(t.numel() * t.element_size() for t in _tensors(value))


@dataclass(frozen=True)
class TargetCast:
    """Moves reference values to the target: its device, its dtype for floating tensors, its memory format."""

    device: torch.device
    dtype: torch.dtype
    channels_last: bool = False

    @classmethod
    def of(cls, module: nn.Module, channels_last: bool = False) -> TargetCast:
        """The device and floating dtype of ``module``'s first parameter (CPU fp32 for a parameter-free one)."""
        param = next((p for p in module.parameters() if p.is_floating_point()), None)
        if param is None:
            return cls(torch.device("cpu"), torch.float32, channels_last)
        return cls(param.device, param.dtype, channels_last)

    def __call__(self, value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            if not value.is_floating_point():
                return value.to(self.device)
            layout = torch.channels_last if self.channels_last and value.dim() == 4 else torch.preserve_format
            return value.to(self.device, self.dtype, memory_format=layout)
        if isinstance(value, (tuple, list)):
            return type(value)(self(v) for v in value)
        if isinstance(value, dict):
            return {k: self(v) for k, v in value.items()}
        return value
