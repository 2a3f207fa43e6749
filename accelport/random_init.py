"""A random init in which every parameter counts: what accelport runs when no real weights are found.

timm initialises norm scales to 1, biases and ConvNeXt V2's GRN to 0, BatchNorm's running statistics to 0 and 1,
and (resnets) each residual block's last BatchNorm scale to 0. On such a model a port that drops the biases,
mishandles a norm's affine or computes GRN wrongly gives the reference's outputs exactly (the dropped values
were zero, the mishandled ones one), and parity passes: a random-init run could not catch whole classes of
porting bugs, and resnet's residual branches were dead. So, with no checkpoint, every floating-point tensor of
the state dict that holds one value throughout is drawn around that value (zeros: normal with std 0.02; a
constant c: c times a factor in [0.5, 1.5] around 1, which keeps variances positive), from ``--seed``: every
run builds the same model, and its predictions stay meaningless (said). Speed is not what changes: OpenVINO,
the compile runner and eager ran timm's init and this one at the same speed, paired (docs/benchmarks.md).
"""

from __future__ import annotations

import logging

import torch

_logger = logging.getLogger(__name__)

ZERO_STD = 0.02  # the spread drawn around a zero tensor (biases, GRN, running means)
RELATIVE_STD = 0.1  # around a non-zero constant c: c * (1 + 0.1 * N(0, 1)), the factor kept in [0.5, 1.5]


def draw_constant_tensors(model: torch.nn.Module, seed: int = 0) -> list[str]:
    """Draw every constant floating-point tensor of ``model``'s state dict (two elements or more) around its
    value, in place; returns their names. Tensors that already vary (timm's random weights) are kept."""
    generator = torch.Generator().manual_seed(seed)
    drawn = []
    with torch.no_grad():
        for name, tensor in model.state_dict(keep_vars=True).items():
            if not tensor.is_floating_point() or tensor.numel() < 2:
                continue
            flat = tensor.detach().reshape(-1)
            if not bool((flat == flat[0]).all()) or not torch.isfinite(flat[0]):
                continue
            value = float(flat[0])
            noise = torch.randn(tensor.shape, generator=generator)
            drawn_values = (noise * ZERO_STD if value == 0.0
                            else value * (1 + RELATIVE_STD * noise).clamp(0.5, 1.5))
            tensor.data.copy_(drawn_values.to(tensor.dtype))
            drawn.append(name)
    if drawn:
        _logger.info("random init: %d constant tensor(s) (norm scales, biases, running statistics...) drawn around "
                     "their value, so that no engine skips them as identities", len(drawn))
    return drawn
