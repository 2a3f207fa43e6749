"""The standard porting faults, applied to a copy of a model: each names the module it breaks.

A fault site must matter to the output with the weights in hand. timm's random init of a ResNet or RegNet
zero-initialises the last norm of every residual branch, and ConvNeXt V1 scales each branch by 1e-6, so a fault in
most of their tensors leaves the output unchanged: "not detected" there would describe a dead branch, not the
verdict. ``choose_sites`` therefore probes each preferred site with a fault of ``probe_size`` and, if the reference
output does not move, tries its neighbours, nearest first.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ..layers.capture import MODEL_ROW

_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Fault:
    """One fault of one size: how to apply it to a model copy, and which module it lands in."""

    kind: str  # e.g. "noise (middle)", "channel swap"
    size: float | None  # relative size; None for faults that have none (a swap, a NaN)
    parameter: str
    apply: Callable[[torch.Tensor], object]
    site: str = ""  # early, middle, late, norm or bias: the ``Site`` it was placed at

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


# How far above the faulted module a named parent still localises it: its enclosing layer and its block
# (``stages.2.blocks.1.mlp.fc1`` -> ``stages.2.blocks.1``); a whole stage or the model does not.
MAX_PARENT_LEVELS = 2


def names_module(first: str | None, module: str) -> bool:
    """Whether a layer comparison that names ``first`` points at ``module``: the module itself or a parent at most
    ``MAX_PARENT_LEVELS`` above it (any parent counted: ``stages`` "named" every fault in the stages)."""
    if first is None:
        return False
    if first == module:
        return True
    return module.startswith(first + ".") and module.count(".") - first.count(".") <= MAX_PARENT_LEVELS


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


# A probe fault whose output moves by less than this (worst-image rel L2 of the faulty copy against the clean one, both
# on the CPU fp32 reference) counts as having no effect: 100x under the tightest output limit (fp32's 1e-3) and a
# hundred times the fp32 rounding noise of a deep network, so only a dead or 1e-6-scaled branch falls below it.
NO_EFFECT_REL_L2 = 1e-5
# Whether a tensor reaches the output is the model's property, not the sizes judged: it is probed with a fault of at
# least this size (with --sizes 1e-6 alone, every live tensor moved the output by less than NO_EFFECT_REL_L2, was
# called untestable, and power exited 0 with 5 of 7 fault types never detected).
PROBE_SIZE = 0.1
MAX_PROBES_PER_SITE = 64  # a model whose nearest 64 candidates are all dead keeps its preferred site, marked so


@dataclass(frozen=True)
class Site:
    """Where a group of faults lands, and the tensors passed over because a fault there left the output unchanged."""

    where: str  # early, middle, late, norm, bias
    parameter: str
    skipped: tuple[str, ...] = ()
    no_effect: bool = False  # every candidate probed left the output unchanged: the preferred one is kept

    def to_json(self) -> dict[str, object]:
        return {"where": self.where, "parameter": self.parameter, "skipped": list(self.skipped),
                "no_effect": self.no_effect}


def _outward(items: list[str], start: int) -> list[str]:
    """``items`` ordered by distance from ``start``, the later neighbour first at equal distance."""
    order = sorted(range(len(items)), key=lambda i: (abs(i - start), i < start))
    return [items[i] for i in order]


def _candidates(model: nn.Module) -> dict[str, list[str]]:
    """Per site, the parameters to try, the preferred one first: early, middle and late conv/linear weights, a norm
    weight and a bias near the middle.

    Only weights of conv/linear modules: a root parameter such as ViT's cls_token or pos_embed is used by the
    model's own forward code, not by a module, so no module row can isolate it (docs/verdict.md, section 6).
    """
    layers = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
    weights = [f"{n}.weight" for n, m in model.named_modules() if isinstance(m, layers)]  # layers, not cls_token
    norms = [f"{n}.weight" for n, m in model.named_modules()
             if ("norm" in type(m).__name__.lower() or "bn" in n.split(".")[-1])
             and isinstance(getattr(m, "weight", None), torch.Tensor)]
    biases = [n for n, p in model.named_parameters() if n.endswith("bias") and p.dim() == 1 and p.numel() > 1]
    candidates = {"early": weights, "middle": _outward(weights, len(weights) // 2),
                  "late": _outward(weights, max(0, len(weights) - 2))}
    if norms:
        candidates["norm"] = _outward(norms, len(norms) // 2)
    if biases:
        candidates["bias"] = _outward(biases, len(biases) // 2)
    return candidates


def _probe(where: str, parameter: str, size: float, seed: int) -> Fault:
    """The probe fault of ``size`` that lands at ``where``."""
    apply = {"norm": _scale(1.0 + size), "bias": _shift(size)}.get(where, _noise(size, seed))
    return Fault(f"probe ({where})", size, parameter, apply, where)


def preferred_sites(model: nn.Module) -> dict[str, Site]:
    """The sites without probing: the first candidate of each."""
    return {where: Site(where, names[0]) for where, names in _candidates(model).items()}


def probe_size(sizes: tuple[float, ...]) -> float:
    """The size of the fault that probes whether a site reaches the output: PROBE_SIZE, or the largest size judged."""
    return max(PROBE_SIZE, *sizes)


def choose_sites(model: nn.Module, sizes: tuple[float, ...], seed: int,
                 output_change: Callable[[nn.Module], float]) -> dict[str, Site]:
    """Per site the nearest candidate where a ``probe_size(sizes)`` fault moves the output; ``output_change``
    gives a faulty copy's worst-image rel L2 against the clean reference (NaN: not finite, which counts as
    moved)."""
    sites, size = {}, probe_size(sizes)
    for where, names in _candidates(model).items():
        skipped: list[str] = []
        for parameter in names[:MAX_PROBES_PER_SITE]:
            if not output_change(_probe(where, parameter, size, seed).model(model)) <= NO_EFFECT_REL_L2:
                sites[where] = Site(where, parameter, tuple(skipped))
                break
            skipped.append(parameter)
        else:
            sites[where] = Site(where, names[0], tuple(skipped), no_effect=True)
        if skipped:
            _logger.info("power: %s site %s (a %g fault moved the output by less than %g at %s)", where,
                         sites[where].parameter if not sites[where].no_effect else "kept, nothing nearby matters",
                         size, NO_EFFECT_REL_L2, ", ".join(skipped))
    return sites


def standard_faults(model: nn.Module, sizes: tuple[float, ...], seed: int = 0,
                    sites: dict[str, Site] | None = None) -> list[Fault]:
    """Single-tensor noise early/middle/late, channel swap, norm scale, bias shift and a NaN, smallest size first,
    at ``sites`` (default: the preferred ones, unprobed)."""
    at = {where: site.parameter for where, site in (sites or preferred_sites(model)).items()}
    faults = [Fault(f"noise ({where})", size, at[where], _noise(size, seed), where)
              for where in ("early", "middle", "late") for size in sizes]
    faults.append(Fault("channel swap (middle)", None, at["middle"], _swap, "middle"))
    if "norm" in at:
        faults += [Fault("norm scale", size, at["norm"], _scale(1.0 + size), "norm") for size in sizes]
    if "bias" in at:
        faults += [Fault("bias shift", size, at["bias"], _shift(size), "bias") for size in sizes]
    faults.append(Fault("non-finite value", None, at["middle"], _nan, "middle"))
    return faults
