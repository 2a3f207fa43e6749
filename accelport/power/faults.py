"""The standard porting faults, applied to a copy of a model: each names the module it breaks."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ..layers.capture import MODEL_ROW


@dataclass(frozen=True)
class Fault:
    """One fault of one size: how to apply it to a model copy, and which module it lands in."""

    kind: str  # e.g. "noise (middle)", "channel swap"
    size: float | None  # relative size; None for faults that have none (a swap, a NaN)
    parameter: str
    apply: Callable[[torch.Tensor], object]

    @property
    def module(self) -> str:
        """The module that owns the tensor; the model's own row for a root parameter (ViT's cls_token)."""
        return self.parameter.rsplit(".", 1)[0] if "." in self.parameter else MODEL_ROW

    def named_by(self, first: str | None) -> bool:
        """``first`` (a first divergent module) is the faulted module or one of its parents (its block)."""
        return names_module(first, self.module)

    def model(self, reference: nn.Module) -> nn.Module:
        faulty = copy.deepcopy(reference)
        with torch.no_grad():
            self.apply(faulty.get_parameter(self.parameter))
        return faulty


def names_module(first: str | None, module: str) -> bool:
    """Whether a layer comparison that names ``first`` points at ``module``: the module itself or a parent of it."""
    return first is not None and (first == module or module.startswith(first + "."))


def _noise(size: float, seed: int) -> Callable[[torch.Tensor], object]:
    def apply(p: torch.Tensor) -> None:
        noise = torch.randn(p.shape, generator=torch.Generator().manual_seed(seed), dtype=p.dtype)
        p.add_(size * p.abs().mean() * noise)
    return apply


def _scale(factor: float) -> Callable[[torch.Tensor], object]:
    return lambda p: p.mul_(factor)


def _shift(size: float) -> Callable[[torch.Tensor], object]:
    return lambda p: p.add_(size * max(float(p.abs().mean()), 1e-3))


def _swap(p: torch.Tensor) -> None:
    p[[0, 1]] = p[[1, 0]].clone()


def _nan(p: torch.Tensor) -> None:
    p.view(-1)[p.numel() // 2] = float("nan")


def _sites(model: nn.Module) -> dict[str, str]:
    """Early, middle and late conv/linear weights, a norm weight and a bias near the middle.

    Only weights of conv/linear modules: a root parameter such as ViT's cls_token or pos_embed is used by the
    model's own forward code, not by a module, so no module row can isolate it (docs/verdict.md, section 6).
    """
    layers = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
    weights = [f"{n}.weight" for n, m in model.named_modules() if isinstance(m, layers)]  # layers, not cls_token
    norms = [n for n, m in model.named_modules() if "norm" in type(m).__name__.lower() or "bn" in n.split(".")[-1]
             if getattr(m, "weight", None) is not None]
    biases = [n for n, p in model.named_parameters() if n.endswith("bias") and p.dim() == 1 and p.numel() > 1]
    sites = {"early": weights[0], "middle": weights[len(weights) // 2], "late": weights[max(0, len(weights) - 2)]}
    if norms:
        sites["norm"] = norms[len(norms) // 2] + ".weight"
    if biases:
        sites["bias"] = biases[len(biases) // 2]
    return sites


def standard_faults(model: nn.Module, sizes: tuple[float, ...], seed: int = 0) -> list[Fault]:
    """Single-tensor noise early/middle/late, channel swap, norm scale, bias shift and a NaN, smallest size first."""
    sites = _sites(model)
    faults = [Fault(f"noise ({where})", size, sites[where], _noise(size, seed))
              for where in ("early", "middle", "late") for size in sizes]
    faults.append(Fault("channel swap (middle)", None, sites["middle"], _swap))
    if "norm" in sites:
        faults += [Fault("norm scale", size, sites["norm"], _scale(1.0 + size)) for size in sizes]
    if "bias" in sites:
        faults += [Fault("bias shift", size, sites["bias"], _shift(size)) for size in sizes]
    faults.append(Fault("non-finite value", None, sites["middle"], _nan))
    return faults
