"""Representation audits as torchmetrics ``Metric``s: linear CKA between two models' features of
the same examples, and probes (linear, k-NN) on frozen features. Features are gathered by
position (exact under DDP); the functional twins and the sign conventions are in
:mod:`lightning_unlearn.metrics.functional.representation`.
"""

from __future__ import annotations

from typing import Any, Literal, Optional

from torch import Tensor

from lightning_unlearn.metrics._positional import PositionalMetric
from lightning_unlearn.metrics.functional.representation import fit_linear_probe, knn_accuracy, linear_cka


class LinearCKA(PositionalMetric):
    """Linear CKA between the features of two models on the same examples, per split.

    ``update(features_a, features_b, split, index)``; ``compute()`` returns ``{split: cka}`` for the
    splits updated (``"forget"``, ``"test"``, ``"retain"``). 1 = the same representation up to
    rotation and isotropic scaling.

    Example:
        >>> import torch
        >>> metric = LinearCKA()
        >>> x = torch.randn(20, 4, generator=torch.Generator().manual_seed(0))
        >>> metric.update(x[:10], 2 * x[:10], "forget", index=torch.arange(10))
        >>> metric.update(x[10:], 2 * x[10:], "forget", index=torch.arange(10, 20))
        >>> round(float(metric.compute()["forget"]), 6)
        1.0
    """

    SPLITS = ("forget", "retain", "test")
    COLUMNS = ("row", "a", "b")
    higher_is_better = None

    def update(
        self, features_a: Tensor, features_b: Tensor, split: Literal["forget", "retain", "test"], index: Optional[Tensor] = None
    ) -> None:
        """Add a batch: ``(N, d1)`` and ``(N, d2)`` features of the same N examples of ``split``."""
        if features_a.ndim != 2 or features_b.ndim != 2 or features_a.shape[0] != features_b.shape[0]:
            raise ValueError("`features_a` and `features_b` must be (N, d) features of the same N examples.")
        self._append(split, {"row": features_a.new_ones(features_a.shape[0]), "a": features_a, "b": features_b}, index)

    def compute(self) -> dict[str, Tensor]:
        out = {}
        for split in self.SPLITS:
            if self.has_samples(split):
                cols = self.columns(split)
                out[split] = linear_cka(cols["a"], cols["b"])
        return out


class FeatureProbe(PositionalMetric):
    """Linear probe and k-NN on frozen features: fitted on the ``"train"`` split (retained data),
    scored on ``"forget"`` (and ``"test"`` when given, for scale).

    ``compute()`` returns ``{"linear/forget", "knn/forget"}`` (and ``".../test"``): accuracies,
    **higher = the features still give the forget labels away** (compare with the retrained
    model's features under the same probe).

    Args:
        k: neighbours of the k-NN (UUEF: 5).
        weight_decay: L2 of the linear probe.
        kwargs: forwarded to :class:`torchmetrics.Metric`.
    """

    SPLITS = ("train", "forget", "test")
    COLUMNS = ("label", "features")
    higher_is_better = None

    def __init__(self, k: int = 5, weight_decay: float = 1e-4, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise ValueError(f"`k` must be an integer >= 1, got {k!r}.")
        self.k, self.weight_decay = k, float(weight_decay)

    def update(
        self, features: Tensor, target: Tensor, split: Literal["train", "forget", "test"], index: Optional[Tensor] = None
    ) -> None:
        """Add ``(N, d)`` features and their ``(N,)`` labels to ``split``."""
        if features.ndim != 2 or target.ndim != 1 or features.shape[0] != target.shape[0]:
            raise ValueError("`features` must be (N, d) and `target` (N,) labels of the same N examples.")
        self._append(split, {"label": target.to(features.device), "features": features}, index)

    def compute(self) -> dict[str, Tensor]:
        train = self.columns("train")
        classes = int(train["label"].max()) + 1
        out = {}
        evaluated = {s: self.columns(s) for s in ("forget", "test") if self.has_samples(s)}
        classes = max([classes] + [int(c["label"].max()) + 1 for c in evaluated.values()])
        predict = fit_linear_probe(
            train["features"], train["label"].round().long(), num_classes=classes, weight_decay=self.weight_decay
        )
        for split, cols in evaluated.items():
            out[f"linear/{split}"] = (predict(cols["features"]) == cols["label"].round().long()).double().mean()
            out[f"knn/{split}"] = knn_accuracy(
                train["features"],
                train["label"].round().long(),
                cols["features"],
                cols["label"].round().long(),
                k=min(self.k, train["features"].shape[0]),
            )
        return out
