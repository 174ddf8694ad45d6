"""Membership-inference attacks and per-example margins as torchmetrics ``Metric``s.

Each metric stores a few floats per sample of the forget, retain and test splits (the
statistics of :func:`~lightning_unlearn.metrics.functional.attacks.sample_statistics` and the
label), gathered by position under DDP (pass ``index=``, as
:func:`~lightning_unlearn.metrics.evaluate_loaders` does): the value is the single-process value
on the same samples, exactly. The attacks themselves are the functional twins in
:mod:`lightning_unlearn.metrics.functional.attacks`; read their sign conventions there.

* :class:`ThresholdMIA` — loss / confidence / entropy / modified-entropy threshold attacks (Song &
  Mittal), ROC AUC and TPR at low FPR, forget-vs-test and retain-vs-test. Higher = remembered.
* :class:`EntropyMIA` — SSD / Bad Teacher logistic regression on the entropy; member rate on
  D_f. Higher = remembered.
* :class:`LossMIA` — SCRUB's cross-validated loss attack, D_f vs same-class test. 0.5 = forgotten.
* :class:`PerExampleMargins` — ``z_y - logsumexp_{j != y} z_j`` of every sample, for the offline
  per-example audits (KLoM, the challenge's epsilon score, U-LiRA).
* :class:`MembershipAudit` — all of the above from one store (what the evaluation pass uses).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, Optional, cast

from torch import Tensor

from lightning_unlearn.metrics._positional import PositionalMetric
from lightning_unlearn.metrics.functional.attacks import (
    DEFAULT_FPRS,
    THRESHOLD_ATTACKS,
    AttackKind,
    Backend,
    entropy_mia,
    loss_mia,
    membership_audit,
    sample_statistics,
    threshold_attacks,
)

Split = Literal["forget", "retain", "test"]
_STAT_COLUMNS = ("label", "log_p", "entropy", "modified_entropy", "margin")


def _check_attacks(attacks: Sequence[str], fprs: Sequence[float]) -> tuple[tuple[AttackKind, ...], tuple[float, ...]]:
    if isinstance(attacks, str) or not attacks or any(a not in THRESHOLD_ATTACKS for a in attacks):
        raise ValueError(f"`attacks` must be a non-empty list drawn from {THRESHOLD_ATTACKS}, got {attacks!r}.")
    if (
        isinstance(fprs, (str, float, int))
        or not fprs
        or not all(isinstance(f, (int, float)) and not isinstance(f, bool) and 0.0 < f < 1.0 for f in fprs)
    ):
        raise ValueError(f"`fprs` must be a list of false-positive rates in (0, 1), got {fprs!r}.")
    # every attack is checked to be one of THRESHOLD_ATTACKS above
    return cast(tuple[AttackKind, ...], tuple(attacks)), tuple(float(f) for f in fprs)


class _SampleStore(PositionalMetric):
    """Stores the per-sample statistics of the three splits (see the module docstring)."""

    SPLITS = ("forget", "retain", "test")
    COLUMNS = _STAT_COLUMNS

    def update(self, logits: Tensor, target: Tensor, split: Split, index: Optional[Tensor] = None) -> None:
        """Store the statistics of one batch of ``split``.

        Args:
            logits: ``(N, C)`` logits (any floating dtype).
            target: ``(N,)`` integer labels.
            split: ``"forget"``, ``"retain"`` or ``"test"``.
            index: optional ``(N,)`` positions of the samples in their split (exact under DDP and
                independent of the order of updates; give it always or never per split).

        Raises:
            ValueError: an unknown split, bad logits/labels/positions.
        """
        self._check_split(split)
        stats = sample_statistics(logits, target)
        stats["label"] = target.to(logits.device)
        self._append(split, stats, index)

    def forward(self, *args: Any, **kwargs: Any) -> None:
        """Same as :meth:`update`: these metrics have no per-batch value."""
        self.update(*args, **kwargs)

    def statistics(self) -> tuple[dict[str, dict[str, Tensor]], dict[str, Tensor]]:
        """``(statistics, labels)`` per split, in position order (float64 statistics, long labels)."""
        stats, labels = {}, {}
        for split in self.SPLITS:
            cols = self.columns(split)
            labels[split] = cols.pop("label").round().long()
            cols.pop("index")
            stats[split] = {k: v.double() for k, v in cols.items()}
        return stats, labels


class ThresholdMIA(_SampleStore):
    """Threshold membership attacks (Song & Mittal 2021) on loss, confidence, entropy and modified
    entropy: ROC AUC and TPR at low FPR, for forget-vs-test and retain-vs-test.

    Scores are oriented "higher = member" (``log p_y``, ``p_y``, ``-H``, ``-Mentr``), so **a higher
    AUC or TPR means remembered**; 0.5 AUC = the forget set looks like unseen test data. The target
    is the retrained model's value. Modified entropy is the paper's (the OPTML code's is not).

    ``compute()`` returns ``{"<attack>/<pair>/<stat>": tensor}`` with ``<pair>`` in
    ``forget_vs_test``, ``retain_vs_test`` and ``<stat>`` in ``auc``, ``tpr@0.01``, ``tpr@0.001``.

    Args:
        attacks: a subset of ``("loss", "confidence", "entropy", "modified_entropy")``.
        fprs: the low false-positive rates of the TPR readings.
        kwargs: forwarded to :class:`torchmetrics.Metric`.

    Example:
        >>> import torch
        >>> metric = ThresholdMIA(attacks=["loss"])
        >>> y = torch.zeros(4, dtype=torch.long)
        >>> metric.update(torch.tensor([[5.0, 0.0]] * 4), y, "retain")
        >>> metric.update(torch.tensor([[5.0, 0.0], [4.0, 0.0], [0.5, 0.0], [0.0, 0.0]]), y, "forget")
        >>> metric.update(torch.tensor([[1.0, 0.0], [0.5, 0.0], [0.2, 0.0], [0.0, 0.0]]), y, "test")
        >>> round(float(metric.compute()["loss/forget_vs_test/auc"]), 4)
        0.6875
    """

    higher_is_better = False

    def __init__(self, attacks: Sequence[str] = THRESHOLD_ATTACKS, fprs: Sequence[float] = DEFAULT_FPRS, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.attacks, self.fprs = _check_attacks(attacks, fprs)

    def compute(self) -> dict[str, Tensor]:
        stats, _ = self.statistics()
        results = threshold_attacks(stats, self.attacks, self.fprs)
        return {f"{a}/{p}/{k}": v for a, pairs in results.items() for p, r in pairs.items() for k, v in r.items()}


class EntropyMIA(_SampleStore):
    """SSD / Bad Teacher entropy attack: a class-balanced logistic regression on the softmax
    entropy, fitted on D_r (members) vs D_t (non-members), applied to D_f.

    ``compute()`` returns the fraction of D_f predicted member: **higher = remembered** (compare
    with the retrained model's value).

    Args:
        backend: ``"torch"`` (native, on the metric's device) or ``"sklearn"``.
        kwargs: forwarded to :class:`torchmetrics.Metric`.
    """

    higher_is_better = False

    def __init__(self, backend: Backend = "torch", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if backend not in ("torch", "sklearn"):
            raise ValueError(f"`backend` must be one of ('torch', 'sklearn'), got {backend!r}.")
        self.backend = backend

    def compute(self) -> Tensor:
        stats, _ = self.statistics()
        return entropy_mia(stats["retain"]["entropy"], stats["test"]["entropy"], stats["forget"]["entropy"], backend=self.backend)


class LossMIA(_SampleStore):
    """SCRUB's loss attack: forget losses vs losses of test samples of the same classes, balanced
    by subsampling, logistic regression, 5-split stratified shuffle-split accuracy.

    ``compute()`` returns the cross-validated accuracy: **0.5 = forgotten**, higher = remembered.
    Only the forget and test splits are needed (retain updates are accepted and ignored).

    Args:
        n_splits: cross-validation splits (SCRUB: 5).
        seed: seed of the subsampling and the splits.
        backend: ``"torch"`` or ``"sklearn"``.
        kwargs: forwarded to :class:`torchmetrics.Metric`.
    """

    higher_is_better = False

    def __init__(self, n_splits: int = 5, seed: int = 0, backend: Backend = "torch", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not isinstance(n_splits, int) or isinstance(n_splits, bool) or n_splits < 1:
            raise ValueError(f"`n_splits` must be an integer >= 1, got {n_splits!r}.")
        if backend not in ("torch", "sklearn"):
            raise ValueError(f"`backend` must be one of ('torch', 'sklearn'), got {backend!r}.")
        self.n_splits, self.seed, self.backend = n_splits, int(seed), backend

    def compute(self) -> Tensor:
        forget, test = self.columns("forget"), self.columns("test")
        return loss_mia(
            -forget["log_p"].double(),
            forget["label"].round().long(),
            -test["log_p"].double(),
            test["label"].round().long(),
            n_splits=self.n_splits,
            seed=self.seed,
            backend=self.backend,
        )


class PerExampleMargins(_SampleStore):
    """The margin ``z_y - logsumexp_{j != y} z_j`` of every sample, per split, in position order:
    what a model population saves once for KLoM, the challenge's epsilon score and U-LiRA.

    ``compute()`` returns ``{"forget": (N_f,), "retain": (N_r,), "test": (N_t,)}`` (splits without
    samples are left out).
    """

    higher_is_better = None

    def compute(self) -> dict[str, Tensor]:
        return {split: self.columns(split)["margin"] for split in self.SPLITS if self.has_samples(split)}


class MembershipAudit(_SampleStore):
    """Every population attack and the per-example margins from one store (the evaluation pass's
    single update per batch).

    ``compute()`` returns ``{"threshold": {attack: {pair: {stat: float}}}, "entropy_lr_member_rate":
    float, "loss_cv_accuracy": float}``; :meth:`margins` and :meth:`statistics` give the
    per-sample values (for pictures and populations).

    Args:
        attacks, fprs: see :class:`ThresholdMIA`.
        backend: see :class:`EntropyMIA`.
        seed: see :class:`LossMIA`.
        kwargs: forwarded to :class:`torchmetrics.Metric`.
    """

    higher_is_better = None

    def __init__(
        self,
        attacks: Sequence[str] = THRESHOLD_ATTACKS,
        fprs: Sequence[float] = DEFAULT_FPRS,
        backend: Backend = "torch",
        seed: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.attacks, self.fprs = _check_attacks(attacks, fprs)
        if backend not in ("torch", "sklearn"):
            raise ValueError(f"`backend` must be one of ('torch', 'sklearn'), got {backend!r}.")
        self.backend, self.seed = backend, int(seed)

    def compute(self) -> dict[str, Any]:
        stats, labels = self.statistics()
        return membership_audit(stats, labels, attacks=self.attacks, fprs=self.fprs, backend=self.backend, seed=self.seed)

    def margins(self) -> dict[str, Tensor]:
        """Per-split margins in position order (see :class:`PerExampleMargins`)."""
        return {split: self.columns(split)["margin"] for split in self.SPLITS if self.has_samples(split)}
