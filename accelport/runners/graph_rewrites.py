"""Rewrites of a copy of the model that keep its math and give an engine a faster graph to export.

timm's ``LayerNorm2d`` (ConvNeXt, ConvNeXt V2, CoAtNet, EdgeNeXt, DaViT, FocalNet and others) normalises the
channels of an NCHW tensor by permuting it to NHWC, calling ``layer_norm`` over the last axis and permuting back.
Exported, that is Transpose, LayerNorm, Transpose around every norm, and OpenVINO runs the transposes (and the
reorders they bring) as separate nodes. Written over the channel axis instead (mean, centred variance, scale and
shift: the same arithmetic), the transposes are gone and OpenVINO runs a cheaper element-wise chain (its CPU MVN
node does not take the channel axis alone, so it is not one node). Measured on a Zen 5 with ConvNeXt V2 atto
(docs/benchmarks.md, "LayerNorm2d over the channel axis", paired): OpenVINO 0.77-0.85x the time at batch 1 and
0.77-0.95x at batch 32 across fp32, bf16 and int8; ONNX Runtime gained nothing at batch 1 and Inductor lost 3-7 %,
so only the OpenVINO runner uses it. The model itself is never changed: the rewrite is made on the copy the
exporter takes anyway (onnx_export.py, openvino_convert.py), with the same module names (so ``layers`` finds the
same modules in the engine's graph) and the same parameters.
"""

from __future__ import annotations

import logging

import torch
from timm.layers import LayerNorm2d

_logger = logging.getLogger(__name__)

CHANNEL_FIRST_NORMS = "layernorm2d-channel-first"


class ChannelFirstLayerNorm2d(LayerNorm2d):
    """timm's ``LayerNorm2d`` computed over the channel axis in place, without the two permutes."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(1, keepdim=True)
        centred = x - mean
        variance = (centred * centred).mean(1, keepdim=True)  # biased, as layer_norm's
        x = centred / torch.sqrt(variance + self.eps)
        if self.weight is not None:
            x = x * self.weight[:, None, None]
        if self.bias is not None:
            x = x + self.bias[:, None, None]
        return x


def rewrites_for(model: torch.nn.Module) -> tuple[str, ...]:
    """The rewrites an export of ``model`` gets: the channel-first norms where it has a timm ``LayerNorm2d`` (the
    exact class: a subclass may have changed ``forward``). Part of the export's cache key (cache.model_identity)."""
    return (CHANNEL_FIRST_NORMS,) if any(type(module) is LayerNorm2d for module in model.modules()) else ()


def apply_rewrites(module: torch.nn.Module, rewrites: tuple[str, ...]) -> None:
    """Rewrite ``module`` in place: the exporters' own private copy of the model, so no further copy is made."""
    if CHANNEL_FIRST_NORMS not in rewrites:
        return
    count = 0
    for child in module.modules():
        if type(child) is LayerNorm2d:
            child.__class__ = ChannelFirstLayerNorm2d
            count += 1
    _logger.info("%s: %d LayerNorm2d computed over the channel axis for the export (no transposes)",
                 type(module).__name__, count)

