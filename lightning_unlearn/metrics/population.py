"""Per-example audits over model populations as torchmetrics ``Metric``s: KLoM, the NeurIPS 2023
unlearning-challenge score and U-LiRA.

Each ``update`` takes the margins of the two populations on a batch of examples (columns) and
stores one value per example, by position; the value of an example depends on its own column
only, so two halves of the examples updated apart give exactly the value of the whole (and
under DDP each rank may take its share of the columns). The functional twins, and the sign
convention of each audit, are in :mod:`lightning_unlearn.metrics.functional.population`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, Optional

from torch import Tensor

from lightning_unlearn.metrics._positional import PositionalMetric
from lightning_unlearn.metrics.functional.population import (
    CHALLENGE_DELTA,
    challenge_score,
    epsilon_scores,
    klom,
    summarise,
    ulira,
)

Split = Literal["forget", "retain", "test"]


class KLoM(PositionalMetric):
    """KL divergence of margins between an unlearned and an oracle (retrained) population, per
    example, summarised per split (Georgiev et al., ICLR 2025).

    **0 = indistinguishable from retraining; higher = further from it.** With few models per
    population the histograms are sparse and even two Retrain populations are far from 0: read it
    beside the reseeded-Retrain value (the noise floor).

    ``compute()`` returns ``{"<split>/mean", "<split>/median", "<split>/p95"}`` for each split
    updated; :meth:`per_example` gives the values.

    Args:
        bins, eps, clip, direction: see :func:`~lightning_unlearn.metrics.functional.klom`.
        quantiles: the quantiles of the summary.
        kwargs: forwarded to :class:`torchmetrics.Metric`.

    Example:
        >>> import torch
        >>> metric = KLoM()
        >>> oracle = torch.randn(8, 30, generator=torch.Generator().manual_seed(0))
        >>> metric.update(oracle + 5.0, oracle, "forget", index=torch.arange(30))
        >>> metric.update(oracle.clone(), oracle, "test", index=torch.arange(30))
        >>> out = metric.compute()
        >>> float(out["test/mean"]), out["forget/mean"] > 5
        (0.0, True)
    """

    SPLITS = ("forget", "retain", "test")
    COLUMNS = ("klom",)
    higher_is_better = False

    def __init__(
        self,
        bins: int = 20,
        eps: float = 1e-5,
        clip: float = 100.0,
        direction: Literal["unlearned_oracle", "oracle_unlearned"] = "unlearned_oracle",
        quantiles: Sequence[float] = (0.5, 0.95),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.bins, self.eps, self.clip, self.direction, self.quantiles = bins, eps, clip, direction, tuple(quantiles)

    def update(self, unlearned: Tensor, oracle: Tensor, split: Split, index: Optional[Tensor] = None) -> None:
        """Add examples (columns) of ``split``: ``unlearned`` ``(N, b)``, ``oracle`` ``(M, b)`` margins."""
        self._check_split(split)
        values = klom(unlearned, oracle, bins=self.bins, eps=self.eps, clip=self.clip, direction=self.direction)
        self._append(split, {"klom": values}, index)

    def per_example(self) -> dict[str, Tensor]:
        """``{split: (n,)}`` KLoM of every example, in position order."""
        return {s: self.columns(s)["klom"].double() for s in self.SPLITS if self.has_samples(s)}

    def compute(self) -> dict[str, float]:
        return {
            f"{split}/{k}": v
            for split, values in self.per_example().items()
            for k, v in summarise(values, self.quantiles).items()
        }


class ChallengeScore(PositionalMetric):
    """The NeurIPS 2023 unlearning challenge's forgetting score over the forget set: a per-example
    epsilon from the best threshold attack between the unlearned and retrained populations, then
    points (1, 1/2, 1/4, ... per 0.5 of epsilon) averaged.

    **Higher = better unlearning** (1 = every example indistinguishable). The estimator is biased:
    two Retrain populations of 16 models score about 0.17, not 1 (see README); compare with the
    reseeded-Retrain value.

    ``compute()`` returns ``{"score", "epsilon_mean", "epsilon_median"}``.

    Args:
        delta: the challenge's 1e-5.
        kwargs: forwarded to :class:`torchmetrics.Metric`.
    """

    SPLITS = ("forget",)
    COLUMNS = ("epsilon", "models")
    higher_is_better = True

    def __init__(self, delta: float = CHALLENGE_DELTA, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.delta = float(delta)

    def update(self, unlearned: Tensor, retrained: Tensor, index: Optional[Tensor] = None) -> None:
        """Add forget examples: ``unlearned`` and ``retrained`` ``(N, b)`` margins (same N)."""
        eps = epsilon_scores(unlearned, retrained, delta=self.delta)
        self._append("forget", {"epsilon": eps, "models": eps.new_full(eps.shape, float(unlearned.shape[0]))}, index)

    def compute(self) -> dict[str, float]:
        cols = self.columns("forget")
        models = int(cols["models"].min())
        eps = cols["epsilon"].double()
        return {
            "score": float(challenge_score(eps, models)),
            "epsilon_mean": float(eps.mean()),
            "epsilon_median": float(eps.median()),
        }


class ULiRA(PositionalMetric):
    """U-LiRA: per-example likelihood-ratio attack, unlearned vs retrained, leave-one-out targets;
    balanced accuracy over the forget set (Hayes et al. 2024).

    **0.5 = forgotten (the attacker guesses); higher = remembered.** The margins themselves are
    kept (``N + M`` floats per example), so a global variance is computed over every example seen,
    whatever the updates.

    Args:
        variance: see :func:`~lightning_unlearn.metrics.functional.ulira`.
        kwargs: forwarded to :class:`torchmetrics.Metric`.
    """

    SPLITS = ("forget",)
    COLUMNS = ("models", "unlearned", "retrained")
    higher_is_better = False

    def __init__(self, variance: Literal["auto", "per_example", "global"] = "auto", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if variance not in ("auto", "per_example", "global"):
            raise ValueError(f"`variance` must be 'auto', 'per_example' or 'global', got {variance!r}.")
        self.variance = variance

    def update(self, unlearned: Tensor, retrained: Tensor, index: Optional[Tensor] = None) -> None:
        """Add forget examples: ``unlearned`` ``(N, b)``, ``retrained`` ``(M, b)`` margins."""
        ulira(unlearned, retrained, variance=self.variance)  # argument checks
        models = unlearned.new_full((unlearned.shape[1],), float(unlearned.shape[0]))
        self._append("forget", {"models": models, "unlearned": unlearned.T, "retrained": retrained.T}, index)

    def per_example(self) -> Tensor:
        """Each forget example's balanced accuracy, in position order."""
        cols = self.columns("forget")
        return ulira(cols["unlearned"].T.double(), cols["retrained"].T.double(), variance=self.variance, reduction="none")

    def compute(self) -> Tensor:
        return self.per_example().mean()
