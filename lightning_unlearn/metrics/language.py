"""Metrics for unlearning in a language model: exact-match extraction of forgotten sequences and
perplexity (forget vs retain vs test).

A model here maps ``(batch, positions)`` token ids to logits ``(batch, vocab, positions)`` (the
layout of :class:`~lightning_unlearn.models.TinyCausalLM` and of ``F.cross_entropy`` for
sequences); targets use ``-100`` for positions to ignore. Pure torch (no Lightning).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["exact_match_extraction", "greedy_continuation", "perplexity"]


@torch.no_grad()
def perplexity(model: nn.Module, batches: Iterable, device: Union[str, torch.device, None] = None) -> float:
    """``exp(mean token cross-entropy)`` over every non-ignored target of ``batches`` (``(x, y)``
    pairs), in eval mode (mode restored).

    Example::

        >>> import torch
        >>> class Uniform(torch.nn.Module):
        ...     def forward(self, x): return torch.zeros(x.shape[0], 4, x.shape[1])
        >>> x = torch.zeros(2, 3, dtype=torch.long); y = torch.tensor([[1, 2, -100], [0, 3, 1]])
        >>> round(perplexity(Uniform(), [(x, y)]), 6)    # a uniform model over 4 tokens
        4.0
    """
    params = list(model.parameters())
    device = device if device is not None else (params[0].device if params else "cpu")
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    try:
        for batch in batches:
            x, y = batch[0].to(device), batch[1].to(device)
            total += float(F.cross_entropy(model(x).float(), y, reduction="sum"))
            count += int((y != -100).sum())
    finally:
        model.train(was_training)
    if count == 0:
        raise ValueError("perplexity got no target token.")
    return math.exp(total / count)


@torch.no_grad()
def greedy_continuation(model: nn.Module, prompt: Tensor, steps: int) -> Tensor:
    """The ``steps`` tokens a model generates greedily (argmax) after ``prompt`` (1-D token ids)."""
    device = next(model.parameters()).device
    tokens = prompt.to(device).unsqueeze(0)
    out = []
    for _ in range(steps):
        logits = model(tokens)[:, :, -1]
        token = logits.argmax(dim=1, keepdim=True)
        out.append(token)
        tokens = torch.cat([tokens, token], dim=1)
    return torch.cat(out, dim=1).squeeze(0).cpu()


@torch.no_grad()
def exact_match_extraction(model: nn.Module, probes: Sequence[tuple[Tensor, Tensor]]) -> float:
    """The fraction of ``(prompt, secret)`` probes whose secret the model reproduces exactly by
    greedy decoding after the prompt (the extraction attack of memorised-sequence studies).
    Eval mode, mode restored.

    Args:
        model: the language model.
        probes: ``(prompt ids, secret ids)`` pairs, 1-D long tensors.

    Returns:
        A fraction in ``[0, 1]``.
    """
    if not probes:
        raise ValueError("exact_match_extraction needs at least one (prompt, secret) probe.")
    was_training = model.training
    model.eval()
    try:
        hits = sum(int(torch.equal(greedy_continuation(model, prompt, len(secret)), secret.cpu())) for prompt, secret in probes)
    finally:
        model.train(was_training)
    return hits / len(probes)
