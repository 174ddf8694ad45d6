"""Influence unlearning (IU): one WoodFisher inverse-Hessian-vector-product step, retrain-free."""

from __future__ import annotations

import math
from typing import Any, Optional, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_unlearn.functional.per_sample import check_chunk_size, per_sample_gradients
from lightning_unlearn.methods.one_shot import OneShotEdit, PassCounts, Statistics
from lightning_unlearn.registry import register
from lightning_unlearn.validation import check_float, check_int


@register(
    "influence_unlearning",
    kind="method",
    paper="Koh & Liang, ICML 2017 (influence); Singh & Alistarh, NeurIPS 2020 (WoodFisher); OPTML `wfisher`",
    cost="no optimiser step: 1 F/B per D_f and D_r batch + N per-sample F/B, one pass, then an N x N solve",
)
class InfluenceUnlearning(OneShotEdit):
    """Influence unlearning (IU) with a WoodFisher inverse Hessian, as OPTML-Group's ``wfisher``
    (Jia et al., NeurIPS 2023, IU baseline): retrain-free.

    Update rule, once: with ``n_f = |D_f|``, ``n_r = |D_r|``, ``n = n_f + n_r`` and per-sample
    cross-entropy gradients ``g_i`` at the original weights (eval mode),
    ``v = (1/n) sum_{D_f} g_i - n_f / (n n_r) sum_{D_r} g_i`` (OPTML's combination; at a
    stationary point of the training loss it equals ``-grad L_{D_r}``), and
    ``theta <- theta + alpha * H^{-1} v`` with the WoodFisher (dampened empirical Fisher)
    ``H = dampening * I + (1/N) sum_{j<=N} g_j g_j^T`` over ``N = num_samples`` retain samples (the
    first ``N`` of the shuffled retain stream; OPTML: the first 1,000 in dataset order).

    ``H^{-1} v`` is computed exactly and without a ``P x P`` matrix: WoodFisher's recursive
    Sherman-Morrison updates from ``H_0 = dampening * I`` sum to Woodbury's identity
    ``H^{-1} v = (v - G^T (N dampening I_N + G G^T)^{-1} G v) / dampening`` with ``G`` the
    ``N x P`` matrix of per-sample gradients (vectorised with ``torch.func``), solved by a Cholesky
    factorisation of the ``N x N`` Gram matrix (see :func:`woodfisher_ihvp`). OPTML's recursion
    (``dampening = 1`` implicitly) carries ``H_0^{-1} g_1`` in place of ``H_{k-1}^{-1} g_k``, so
    it corrects ``v`` along the first gradient only; we compute the inverse it approximates.

    Limits: ``G`` is held on the parameters' device, ``4 N P`` bytes (SmallCNN, P ~ 30k,
    N = 1,000: 120 MB; ResNet-18, P ~ 11M: 45 GB, so use N ~ 100-200 there), plus the
    ``N x N`` Gram matrix; under DDP each rank collects ``ceil(N / world_size)`` rows and they are
    all-gathered for the solve.

    Defaults: ``num_samples = 1000`` and ``dampening = 1`` (OPTML's ``woodfisher``); ``alpha = 1``
    (OPTML's README passes ``--alpha 0.2`` for CIFAR-10 ResNet-18 with its approximate inverse;
    tune per model: ``configs/digits/influence.yaml``). Cost: one forward/backward per forget and
    retain batch and ``N`` per-sample gradients, once, then ``O(N^2 P + N^3)`` for the solve; no
    optimiser step. Data: D_f and D_r with labels.

    Args:
        model: the trained classifier to unlearn.
        weights: optional path of weights to load into ``model`` first.
        alpha: step size of the influence update.
        num_samples: retain samples ``N`` in the WoodFisher estimate.
        dampening: the ``dampening * I`` added to the empirical Fisher (its initial value ``H_0``).
        chunk_size: samples per vectorised per-sample-gradient chunk (``None``: the whole batch).
        inplace: edit the given model object itself instead of a copy.

    Raises:
        ValueError: ``alpha`` or ``dampening`` not a positive finite number, ``num_samples < 1``,
            ``chunk_size < 1``; at fit start, no UnlearningDataModule (no forget data).

    Example::

        trainer = L.Trainer(max_epochs=1, callbacks=[UnlearningEvaluation()])
        trainer.fit(InfluenceUnlearning(net, alpha=1.0, num_samples=1000), datamodule=dm)
    """

    def __init__(
        self,
        model: nn.Module,
        alpha: float = 1.0,
        num_samples: int = 1000,
        dampening: float = 1.0,
        chunk_size: Optional[int] = None,
        **kwargs: Any,
    ) -> None:
        alpha = check_float(alpha, "alpha", minimum=0.0, open_minimum=True, hint="e.g. 1.0")
        dampening = check_float(dampening, "dampening", minimum=0.0, open_minimum=True, hint="e.g. 1.0")
        num_samples = check_int(num_samples, "num_samples", minimum=1, hint="OPTML uses 1000")
        check_chunk_size(chunk_size)
        super().__init__(model, **kwargs)
        self.alpha, self.num_samples, self.dampening = alpha, num_samples, dampening
        self.chunk_size = chunk_size

    def init_statistics(self) -> Statistics:
        params = self.trainable_parameters()
        rows = math.ceil(self.num_samples / (self.trainer.world_size if self._trainer is not None else 1))
        if self._budget["retain"] is not None:
            rows = min(rows, self._budget["retain"])
        return {
            "forget": [torch.zeros_like(p) for p in params],  # sum of per-sample gradients over D_f
            "retain": [torch.zeros_like(p) for p in params],  # sum of per-sample gradients over D_r
            "rows": params[0].new_zeros(rows, sum(p.numel() for p in params)),  # per-sample retain gradients
            "num_rows": 0,
        }

    def accumulate(self, split: str, x: Tensor, y: Tensor) -> Tensor:
        sums, logged = self._stats[split], []
        k = 0
        if split == "retain":
            filled = self._stats["num_rows"]
            k = min(len(x), self._stats["rows"].shape[0] - filled)
        if k > 0:  # per-sample gradients of the first k samples: rows of G, and their sum
            grads = list(per_sample_gradients(self.model, F.cross_entropy, x[:k], y[:k], self.chunk_size).values())
            self._stats["rows"][filled : filled + k] = torch.cat([g.reshape(k, -1) for g in grads], dim=1)
            self._stats["num_rows"] = filled + k
            torch._foreach_add_(sums, [g.sum(dim=0) for g in grads])
            with torch.no_grad():
                logged.append(F.cross_entropy(self.model(x[:k]), y[:k], reduction="sum"))
        if k < len(x):
            loss = F.cross_entropy(self.model(x[k:]), y[k:], reduction="sum")
            torch._foreach_add_(sums, self.batch_gradients(loss))
            logged.append(loss.detach())
        return torch.stack(logged).sum() / len(x)

    def reduce_statistics(self, statistics: Statistics) -> Statistics:
        reduced = {key: self._reduce(statistics[key]) for key in ("forget", "retain")}
        rows, filled = statistics["rows"], statistics["num_rows"]
        if self.trainer.world_size > 1:  # concatenate every rank's rows
            all_rows = self.all_gather(rows)
            all_filled = cast(
                Tensor, self.all_gather(torch.tensor(filled, device=rows.device))
            ).tolist()  # a tensor in, a tensor out
            reduced["rows"] = torch.cat([r[:m] for r, m in zip(all_rows, all_filled)])
        else:
            reduced["rows"] = rows[:filled]
        return reduced

    def apply_edit(self, statistics: Statistics, counts: PassCounts) -> dict[str, float]:
        n_f, n_r = counts.samples["forget"], max(counts.samples["retain"], 1)
        n = n_f + n_r
        forget = torch.cat([g.flatten() for g in statistics["forget"]])
        retain = torch.cat([g.flatten() for g in statistics["retain"]])
        v = forget / n - retain * (n_f / (n * n_r))
        step = woodfisher_ihvp(statistics["rows"], v, self.dampening) * self.alpha
        params: list[Tensor] = list(self.trainable_parameters())
        torch._foreach_add_(params, [s.view_as(p) for s, p in zip(step.split([p.numel() for p in params]), params)])
        return {"step_norm": float(step.norm()), "woodfisher_samples": float(statistics["rows"].shape[0])}


def woodfisher_ihvp(grads: Tensor, v: Tensor, dampening: float = 1.0) -> Tensor:
    """``H^{-1} v`` for the WoodFisher ``H = dampening * I + (1/N) G^T G`` without forming ``H``.

    Woodbury's identity (what WoodFisher's ``N`` recursive Sherman-Morrison updates from
    ``H_0 = dampening * I`` add up to): ``H^{-1} v = (v - G^T (N dampening I + G G^T)^{-1} G v) / dampening``,
    with the ``N x N`` system solved by Cholesky in float64. Memory: ``G`` plus ``N^2``.

    Args:
        grads: ``G``, per-sample gradients as rows, shape ``(N, P)``.
        v: the vector, shape ``(P,)``.
        dampening: the multiple of the identity added to the empirical Fisher (> 0).

    Returns:
        ``H^{-1} v``, shape ``(P,)``, in ``v``'s dtype.
    """
    n = grads.shape[0]
    if n == 0:
        return v / dampening
    gram = (grads @ grads.T).double()
    gram.diagonal().add_(n * dampening)
    coef = torch.cholesky_solve((grads @ v).double().unsqueeze(1), torch.linalg.cholesky(gram)).squeeze(1)
    return (v - grads.T @ coef.to(v.dtype)) / dampening
