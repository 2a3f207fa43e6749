"""A CPU stand-in for an accelerator's reduced-mantissa "fp32" (TF32 on CUDA, HF32 on Ascend).

``--fp32-math fast`` lets tensor cores (and Ascend's cube unit) read conv/matmul operands with a 10-bit mantissa
(TF32; Ascend documents HF32 with 11 bits) while accumulating in fp32. ``emulate_tf32`` reproduces that on the CPU
for the modules that do most of a vision model's arithmetic: every ``nn.Conv1d/2d/3d`` and ``nn.Linear`` sees its
weight and its input rounded to nearest at 10 mantissa bits; the sum stays IEEE fp32. Not covered: matmuls called
as functions inside a module's forward (timm attention's ``F.scaled_dot_product_attention``, ``q @ k.T`` and
``attn @ v``, einsum), which a GPU may also run in TF32, so for attention models the emulation slightly understates
the error; depthwise convolutions, which accelerators often run without tensor cores, are rounded anyway (overstates).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable

import torch

_logger = logging.getLogger(__name__)

TF32_MODULES = (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d, torch.nn.Linear)
_DROPPED_BITS = 13  # fp32 has 23 mantissa bits, TF32 keeps 10


def round_to_tf32(tensor: torch.Tensor) -> torch.Tensor:
    """Round-to-nearest (ties away from zero, as ``cvt.rna.tf32.f32``) to TF32's 10-bit mantissa; fp32 only.

    Works on the bit pattern: adding half of the dropped range then clearing it rounds the magnitude; Inf and NaN
    stay what they are, and the largest finite values round up to Inf as a real conversion does.
    """
    if tensor.dtype != torch.float32:
        return tensor
    bits = tensor.view(torch.int32)  # same element size: no stride requirement, the layout is kept
    half, mask = 1 << (_DROPPED_BITS - 1), ~((1 << _DROPPED_BITS) - 1)
    return ((bits + half) & mask).view(torch.float32)


def emulate_tf32(model: torch.nn.Module,
                 rounding: Callable[[torch.Tensor], torch.Tensor] = round_to_tf32) -> torch.nn.Module:
    """A deep copy of ``model`` whose conv/linear modules see ``rounding``-ed weights and inputs (TF32 by default).

    The copy keeps forward pre-hooks, so it must not be handed back as the reference: ``model`` itself is untouched.
    """
    emulated = copy.deepcopy(model)
    count = 0
    for module in emulated.modules():
        if isinstance(module, TF32_MODULES):
            module.weight.data = rounding(module.weight.data)
            module.register_forward_pre_hook(lambda _module, args: (rounding(args[0]), *args[1:]))
            count += 1
    _logger.debug("TF32 emulation on %d conv/linear module(s)", count)
    return emulated
