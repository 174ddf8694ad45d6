"""Post-training weight quantisation, the recovery attack of "Catastrophic Failure of LLM
Unlearning via Quantization" (Zhang et al., ICLR 2025) adapted to classifiers: per-output-channel
symmetric round-to-nearest (RTN) integers for every convolution and linear weight, stored back
as floats ("fake quantisation"); biases and normalisation layers stay in floating point.

For ``b`` bits and output channel ``c``: ``s_c = max|W_c| / (2^(b-1) - 1)``,
``Q = clamp(round(W / s_c), -(2^(b-1) - 1), 2^(b-1) - 1)``, ``W' = Q * s_c`` (``round`` breaks
ties to even). A channel of zeros stays zero (pruned weights stay pruned). If unlearning moved
the weights by less than half a step ``s_c / 2``, the quantised unlearned model is the
quantised original: forgotten knowledge comes back.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = ["QUANTIZED_MODULES", "quantize_tensor", "quantize_weights"]

#: Module types whose ``weight`` is quantised.
QUANTIZED_MODULES: tuple[type, ...] = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def quantize_tensor(weight: Tensor, bits: int, dim: int = 0) -> Tensor:
    """``weight`` fake-quantised to symmetric ``bits``-bit integers, one scale per slice along
    ``dim`` (the output channel), returned in ``weight``'s dtype.

    Raises:
        ValueError: ``bits`` outside 2..16.

    Example:
        >>> w = torch.tensor([[0.5, -0.25, 0.1], [2.0, 1.0, -0.7]])
        >>> quantize_tensor(w, bits=4)
        tensor([[ 0.5000, -0.2857,  0.0714],
                [ 2.0000,  1.1429, -0.5714]])
    """
    if not isinstance(bits, int) or isinstance(bits, bool) or not 2 <= bits <= 16:
        raise ValueError(f"`bits` must be an integer in 2..16, got {bits!r}.")
    qmax = 2 ** (bits - 1) - 1
    w = weight.detach().to(torch.float64)
    moved = w.movedim(dim, 0)
    scale = moved.abs().flatten(1).amax(1) / qmax
    shape = (-1,) + (1,) * (moved.ndim - 1)
    safe = torch.where(scale > 0, scale, torch.ones_like(scale)).reshape(shape)
    q = torch.clamp(torch.round(moved / safe), -qmax, qmax)
    out = torch.where(scale.reshape(shape) > 0, q * safe, torch.zeros_like(moved))
    return out.movedim(0, dim).to(weight.dtype)


def quantize_weights(
    model: nn.Module, bits: int = 8, *, inplace: bool = False, modules: Sequence[type] = QUANTIZED_MODULES
) -> nn.Module:
    """A copy of ``model`` (``inplace=False``) whose conv and linear weights are fake-quantised
    per output channel to ``bits`` bits (see the module docstring). A weight pruned with
    ``torch.nn.utils.prune`` is quantised in ``weight_orig`` (its mask still applies).

    Example:
        >>> net = nn.Linear(3, 2)
        >>> quantized = quantize_weights(net, bits=8)
        >>> bool((quantized.weight - net.weight).abs().max() <= net.weight.abs().max() / 254 + 1e-7)
        True
    """
    target = model if inplace else copy.deepcopy(model)
    with torch.no_grad():
        for module in target.modules():
            if not isinstance(module, tuple(modules)):
                continue
            weight = getattr(module, "weight_orig", None)
            if not isinstance(weight, Tensor):
                weight = getattr(module, "weight", None)
            if isinstance(weight, Tensor) and weight.is_floating_point():
                weight.copy_(quantize_tensor(weight, bits))
            weight_orig, weight_mask = getattr(module, "weight_orig", None), getattr(module, "weight_mask", None)
            if isinstance(weight_orig, Tensor) and isinstance(weight_mask, Tensor):
                module.weight = weight_orig * weight_mask  # refresh the pruned view
    return target
