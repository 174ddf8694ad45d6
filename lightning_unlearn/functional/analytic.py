"""Exact analytic unlearning of a linear head (ACU, Tang et al., 2025): recursive least squares.

With the backbone frozen, a linear head on features ``x`` (with a constant 1 appended for the
bias) fitted by regularised least squares to one-hot targets ``Y`` is

    W = (X^T X + gamma I)^-1 X^T Y = R Q,

where only two matrices summarise the data: the inverse autocorrelation ``R = (X^T X + gamma I)^-1``
(``d x d``) and the cross-correlation ``Q = X^T Y`` (``d x C``). No raw example is kept. Removing
a request ``(X_u, Y_u)`` changes them to ``(X^T X - X_u^T X_u + gamma I)^-1`` and ``Q - X_u^T Y_u``;
the Woodbury identity gives the first without any ``d x d`` inversion:

    R <- R + R X_u^T (I_k - X_u R X_u^T)^-1 X_u R,

``O(k d^2 + k^2 d + k^3)`` for ``k`` rows, i.e. ``O(d^2)`` per removed sample for chunks of
``k <= d`` rows. The head after the request, ``W = R Q``, is exactly the least-squares head on
what remains (:func:`least_squares_head`), whatever the order and grouping of removals. Everything
runs in float64. Pure torch, no Lightning::

    memory = analytic_memory(features, labels, num_classes, gamma=1.0)    # the learning phase
    memory = forget_rows(memory, features_u, labels_u)                    # a deletion request
    weight, bias = memory.head()                                         # the new nn.Linear
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_unlearn.validation import check_float, check_int

__all__ = ["AnalyticMemory", "analytic_memory", "augment", "forget_rows", "learn_rows", "least_squares_head", "one_hot"]


@dataclass
class AnalyticMemory:
    """What ACU keeps of the data: no example, two matrices and the count.

    Attributes:
        inverse_autocorrelation: ``R = (X^T X + gamma I)^-1``, ``(d+1) x (d+1)`` float64 (features
            with the bias column).
        cross_correlation: ``Q = X^T Y``, ``(d+1) x C`` float64.
        gamma: the ridge regularisation.
        count: number of examples summarised.
    """

    inverse_autocorrelation: Tensor
    cross_correlation: Tensor
    gamma: float
    count: int

    @property
    def weight(self) -> Tensor:
        """``W = R Q``, ``(d+1) x C``: the last row is the bias."""
        return self.inverse_autocorrelation @ self.cross_correlation

    def head(self) -> tuple[Tensor, Tensor]:
        """``(weight, bias)`` of the equivalent ``nn.Linear(d, C)``: ``(C, d)`` and ``(C,)`` float64."""
        w = self.weight
        return w[:-1].T.contiguous(), w[-1].contiguous()

    def state(self) -> dict:
        """A plain dict (tensors on the CPU) for checkpoints."""
        return {
            "R": self.inverse_autocorrelation.cpu(),
            "Q": self.cross_correlation.cpu(),
            "gamma": self.gamma,
            "count": self.count,
        }

    @classmethod
    def from_state(cls, state: dict) -> AnalyticMemory:
        return cls(state["R"].double(), state["Q"].double(), float(state["gamma"]), int(state["count"]))


def augment(features: Tensor) -> Tensor:
    """``[features, 1]`` in float64: the bias as a weight on a constant feature."""
    features = features.detach().double().flatten(1)
    return torch.cat([features, torch.ones(len(features), 1, dtype=features.dtype, device=features.device)], dim=1)


def one_hot(labels: Tensor, num_classes: int) -> Tensor:
    """One-hot float64 targets ``(N, C)``."""
    return F.one_hot(labels.long().flatten(), num_classes).double()


def analytic_memory(features: Tensor, labels: Tensor, num_classes: int, gamma: float = 1.0) -> AnalyticMemory:
    """The learning phase on ``(features, labels)``: ``R = (X^T X + gamma I)^-1``, ``Q = X^T Y``.

    Args:
        features: ``(N, d)`` backbone features (the head's input).
        labels: ``(N,)`` class labels.
        num_classes: ``C``.
        gamma: ridge regularisation ``> 0`` (keeps ``R`` defined whatever is deleted).

    Example::

        >>> import torch
        >>> x, y = torch.randn(50, 4, dtype=torch.float64), torch.arange(50) % 3
        >>> memory = analytic_memory(x, y, 3, gamma=0.1)
        >>> torch.allclose(memory.weight, least_squares_head(x, y, 3, gamma=0.1))
        True
    """
    gamma = check_float(gamma, "gamma", minimum=0.0, open_minimum=True, hint="the ridge regularisation, e.g. 1.0")
    x = augment(features)
    a = x.T @ x + gamma * torch.eye(x.shape[1], dtype=x.dtype, device=x.device)
    return AnalyticMemory(
        torch.cholesky_inverse(torch.linalg.cholesky(a)), x.T @ one_hot(labels, num_classes).to(x.device), gamma, len(x)
    )


def forget_rows(memory: AnalyticMemory, features: Tensor, labels: Tensor, chunk_size: Optional[int] = None) -> AnalyticMemory:
    """Removes ``(features, labels)`` from the memory exactly, by recursive Woodbury downdates.

    Args:
        memory: the memory (modified copies are returned; the input is not changed).
        features: ``(k, d)`` features of the removed examples.
        labels: ``(k,)`` their labels.
        chunk_size: rows per downdate (default ``d + 1``: ``O(d^2)`` per removed row).

    Raises:
        ValueError: more rows removed than the memory holds, or a downdate that is not positive
            definite (rows that were never learned).

    Example::

        >>> import torch
        >>> x, y = torch.randn(60, 5, dtype=torch.float64), torch.arange(60) % 4
        >>> memory = forget_rows(analytic_memory(x, y, 4), x[:20], y[:20])
        >>> torch.allclose(memory.weight, least_squares_head(x[20:], y[20:], 4))
        True
    """
    return _woodbury(memory, features, labels, -1, chunk_size)


def learn_rows(memory: AnalyticMemory, features: Tensor, labels: Tensor, chunk_size: Optional[int] = None) -> AnalyticMemory:
    """Adds ``(features, labels)`` to the memory (recursive least squares, the incremental phase of
    analytic continual learning); the inverse of :func:`forget_rows`."""
    return _woodbury(memory, features, labels, +1, chunk_size)


def _woodbury(memory: AnalyticMemory, features: Tensor, labels: Tensor, sign: int, chunk_size: Optional[int]) -> AnalyticMemory:
    r = memory.inverse_autocorrelation
    q = memory.cross_correlation
    x = augment(features).to(r.device)
    y = one_hot(labels, q.shape[1]).to(r.device)
    if x.shape[1] != r.shape[0]:
        raise ValueError(f"features have {x.shape[1] - 1} dimensions but the memory was built on {r.shape[0] - 1}.")
    if sign < 0 and len(x) > memory.count:
        raise ValueError(f"cannot remove {len(x)} examples from a memory of {memory.count}.")
    step = x.shape[1] if chunk_size is None else check_int(chunk_size, "chunk_size", minimum=1)
    eye = torch.eye(min(step, len(x)), dtype=r.dtype, device=r.device)
    for start in range(0, len(x), step):
        xc = x[start : start + step]
        u = xc @ r  # k x d
        s = eye[: len(xc), : len(xc)] + sign * (u @ xc.T)  # I -/+ X R X^T, k x k
        if len(xc) == 1:  # Sherman-Morrison: a scalar, no factorisation
            if float(s) <= 0.0:
                raise ValueError("The rank-1 downdate is not positive definite: the removed example was not in the memory.")
            r = r - sign * (u.T @ u) / s
            continue
        try:
            chol = torch.linalg.cholesky(0.5 * (s + s.T))
        except RuntimeError:
            raise ValueError(
                "The Woodbury downdate is not positive definite: the removed examples were not in the memory"
                " (or the memory is corrupt)."
            ) from None
        r = r - sign * (u.T @ torch.cholesky_solve(u, chol))
        r = 0.5 * (r + r.T)
    q = q + sign * (x.T @ y)
    return AnalyticMemory(r, q, memory.gamma, memory.count + sign * len(x))


def least_squares_head(features: Tensor, labels: Tensor, num_classes: int, gamma: float = 1.0) -> Tensor:
    """The reference: ``W = (X^T X + gamma I)^-1 X^T Y`` solved directly (``(d+1) x C``, float64)."""
    x = augment(features)
    a = x.T @ x + gamma * torch.eye(x.shape[1], dtype=x.dtype, device=x.device)
    return torch.linalg.solve(a, x.T @ one_hot(labels, num_classes).to(x.device))
