"""Rewrites of a copy of the model that keep its math and give an engine a faster graph to export.

timm's ``LayerNorm2d`` (ConvNeXt, ConvNeXt V2, MaxViT, EfficientFormerV2 and others) normalises the channels of
an NCHW tensor by permuting it to NHWC, calling ``layer_norm`` over the last axis and permuting back. Exported,
that is Transpose, LayerNorm, Transpose around every norm, and OpenVINO runs the transposes (and the reorders
they bring) as separate nodes. Written over the channel axis instead (mean, centred variance, scale and shift:
the same arithmetic), OpenVINO fuses it into one MVN node and the transposes are gone. Measured on a Zen 5 with
ConvNeXt V2 atto (docs/benchmarks.md, "LayerNorm2d over the channel axis"): OpenVINO 0.84-0.89x the time at
batch 1 and 0.83-0.87x at batch 32; ONNX Runtime and Inductor gained nothing (Inductor lost 3-7 %), so only the
OpenVINO runner uses it. The model itself is never changed: the rewrite is a copy, with the same module names
(so ``layers`` finds the same modules in the engine's graph) and the same parameters.
"""

from __future__ import annotations

import copy
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


def channel_first_norms(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` itself if it has no timm ``LayerNorm2d``, else a copy whose ``LayerNorm2d`` modules compute over
    the channel axis. Only the exact class: a subclass may have changed ``forward``."""
    if not any(type(module) is LayerNorm2d for module in model.modules()):
        return model
    rewritten = copy.deepcopy(model)
    count = 0
    for module in rewritten.modules():
        if type(module) is LayerNorm2d:
            module.__class__ = ChannelFirstLayerNorm2d
            count += 1
    _logger.info("%s: %d LayerNorm2d computed over the channel axis for the export (no transposes)",
                 type(model).__name__, count)
    return rewritten


def rewrites_in(model: torch.nn.Module) -> list[str]:
    """The rewrites a model carries, for cache keys and the runner's record (empty for an unchanged model)."""
    return [CHANNEL_FIRST_NORMS] if any(isinstance(m, ChannelFirstLayerNorm2d) for m in model.modules()) else []
