"""Representation-level audits ("Are We Truly Forgetting?", Kim et al. 2025; yongwookim1/UUEF):
outputs can forget while features remember.

* :func:`linear_cka` — linear centred kernel alignment between two feature matrices of the same
  examples: 1 = the same representation up to rotation and scale, 0 = unrelated. The unlearned
  model's features against the retrained model's (**higher = more like Retrain**) and against
  the original's (**higher = the representation did not move**).
* :func:`linear_probe_accuracy`, :func:`knn_accuracy` — frozen features, a classifier trained on
  retained data, scored on the forget set: **how much of the forget labels the features still
  give away** (higher = remembered; compare with the retrained model's features under the same
  probe).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Optional

import torch
from torch import Tensor


def _matrix(x: Tensor, name: str, rows: int = 2) -> Tensor:
    if not isinstance(x, Tensor) or x.ndim != 2 or x.shape[0] < rows:
        raise ValueError(f"`{name}` must be a (n >= {rows}, d) tensor of features.")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"`{name}` holds NaN or inf features.")
    return x.double()


def linear_cka(x: Tensor, y: Tensor) -> Tensor:
    """Linear CKA of ``x`` ``(n, d1)`` and ``y`` ``(n, d2)`` (rows = the same examples):
    ``||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F)`` with column-centred ``Xc``, ``Yc``, which
    equals ``HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))`` for the linear kernels ``K = XX^T``,
    ``L = YY^T`` and ``HSIC(K, L) = tr(KHLH)`` (UUEF's ``CKA.py``) without forming ``n x n``
    matrices. UUEF averages it over batches of 512 examples; here it is computed on all of them.

    Returns:
        0-d float64 in ``[0, 1]`` (0 when a representation is constant).

    Example:
        >>> import torch
        >>> x = torch.randn(50, 8, generator=torch.Generator().manual_seed(0))
        >>> q, _ = torch.linalg.qr(torch.randn(8, 8, generator=torch.Generator().manual_seed(1)))
        >>> round(float(linear_cka(x, 3.0 * x @ q)), 6)
        1.0
    """
    x, y = _matrix(x, "x"), _matrix(y, "y").to(x.device)
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"`x` and `y` hold {x.shape[0]} and {y.shape[0]} rows: give the features of the same examples.")
    x = x - x.mean(0, keepdim=True)
    y = y - y.mean(0, keepdim=True)
    cross = torch.linalg.matrix_norm(y.T @ x) ** 2
    norm_x = torch.linalg.matrix_norm(x.T @ x)
    norm_y = torch.linalg.matrix_norm(y.T @ y)
    if float(norm_x) == 0.0 or float(norm_y) == 0.0:
        return x.new_zeros(())
    return (cross / (norm_x * norm_y)).clamp(0.0, 1.0)


def _standardise(train: Tensor, *others: Tensor) -> tuple[Tensor, ...]:
    mean, std = train.mean(0, keepdim=True), train.std(0, keepdim=True).clamp_min(1e-8)
    return tuple((t - mean) / std for t in (train, *others))


def fit_linear_probe(
    train_x: Tensor,
    train_y: Tensor,
    *,
    num_classes: Optional[int] = None,
    weight_decay: float = 1e-4,
    max_iter: int = 200,
) -> Callable[[Tensor], Tensor]:
    """A multinomial logistic regression (a linear probe) fitted on frozen features: features
    standardised with the training mean and deviation, L2 ``weight_decay`` on the weights,
    full-batch L-BFGS in float64 (deterministic). Returns ``predict(x) -> labels``."""
    train_x = _matrix(train_x, "train_x")
    train_y = train_y.to(train_x.device).long()
    classes = int(num_classes) if num_classes is not None else int(train_y.max()) + 1
    mean, std = train_x.mean(0, keepdim=True), train_x.std(0, keepdim=True).clamp_min(1e-8)
    train_x = (train_x - mean) / std
    weight = torch.zeros(train_x.shape[1], classes, dtype=torch.float64, device=train_x.device, requires_grad=True)
    bias = torch.zeros(classes, dtype=torch.float64, device=train_x.device, requires_grad=True)
    optimizer = torch.optim.LBFGS(
        [weight, bias], lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe", tolerance_grad=1e-9, tolerance_change=1e-12
    )

    def closure() -> Tensor:
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(train_x @ weight + bias, train_y) + weight_decay * (weight * weight).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    weight, bias = weight.detach(), bias.detach()

    def predict(x: Tensor) -> Tensor:
        x = _matrix(x, "x", 1).to(weight.device)
        return (((x - mean) / std) @ weight + bias).argmax(1)

    return predict


def linear_probe_accuracy(
    train_x: Tensor,
    train_y: Tensor,
    eval_x: Tensor,
    eval_y: Tensor,
    *,
    num_classes: Optional[int] = None,
    weight_decay: float = 1e-4,
    max_iter: int = 200,
) -> Tensor:
    """Accuracy on ``(eval_x, eval_y)`` of :func:`fit_linear_probe` fitted on ``(train_x, train_y)``.

    Returns:
        0-d float64 accuracy in ``[0, 1]``.

    Example:
        >>> import torch
        >>> g = torch.Generator().manual_seed(0)
        >>> y = torch.arange(200) % 2
        >>> x = torch.randn(200, 5, generator=g) + 3 * y[:, None]
        >>> float(linear_probe_accuracy(x[:100], y[:100], x[100:], y[100:]))
        1.0
    """
    if num_classes is None:
        num_classes = int(max(int(train_y.max()), int(eval_y.max()))) + 1
    predict = fit_linear_probe(train_x, train_y, num_classes=num_classes, weight_decay=weight_decay, max_iter=max_iter)
    return (predict(eval_x) == eval_y.to(train_x.device).long()).double().mean()


def knn_accuracy(train_x: Tensor, train_y: Tensor, eval_x: Tensor, eval_y: Tensor, *, k: int = 5, chunk: int = 1024) -> Tensor:
    """Accuracy of a ``k``-nearest-neighbour vote (cosine similarity, uniform weights; UUEF's
    ``KNeighborsClassifier(k=5, metric="cosine")``) of ``train`` features on ``eval`` features. A
    tied vote goes to the smallest label, as scikit-learn's.

    Example:
        >>> import torch
        >>> train = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
        >>> float(knn_accuracy(train, torch.tensor([0, 0, 1, 1]), torch.tensor([[1.0, 0.2]]), torch.tensor([0]), k=3))
        1.0
    """
    train_x, eval_x = _matrix(train_x, "train_x", 1), _matrix(eval_x, "eval_x", 1).to(train_x.device)
    if not isinstance(k, int) or k < 1 or k > train_x.shape[0]:
        raise ValueError(f"`k` must be an integer in 1..{train_x.shape[0]} (the training rows), got {k!r}.")
    train_y, eval_y = train_y.to(train_x.device).long(), eval_y.to(train_x.device).long()
    classes = int(max(train_y.max(), eval_y.max())) + 1
    train_n = torch.nn.functional.normalize(train_x, dim=1)
    correct = 0
    for start in range(0, eval_x.shape[0], chunk):
        block = torch.nn.functional.normalize(eval_x[start : start + chunk], dim=1)
        nearest = (block @ train_n.T).topk(k, dim=1).indices
        votes = torch.zeros(block.shape[0], classes, dtype=torch.float64, device=train_x.device)
        votes.scatter_add_(1, train_y[nearest], torch.ones_like(nearest, dtype=torch.float64))
        correct += int((votes.argmax(1) == eval_y[start : start + chunk]).sum())
    return torch.tensor(correct / eval_x.shape[0], dtype=torch.float64, device=train_x.device)
