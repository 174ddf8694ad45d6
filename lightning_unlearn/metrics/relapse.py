"""Relapse: is data forgotten by an earlier request still forgotten after later ones?

UnCLe (Adhikari et al., "An Unlearning Framework for Continual Learning") names *relapse* the
return of previously unlearned knowledge during later updates. For a chain of deletion requests,
after step ``k`` we measure, on every earlier forget set ``D_f^(j)`` (``j < k``), the two numbers
that say "forgotten" in the OPTML protocol:

* forget accuracy ``Acc(D_f^(j))`` (UA = 1 - accuracy);
* MIA-efficacy on ``D_f^(j)``: the OPTML attack (RBF-SVC on true-class confidence, members = the
  first ``|D_t|`` retain rows, non-members = the test set, see
  :func:`~lightning_unlearn.metrics.functional.mia_efficacy`), trained once per model and applied
  to each earlier set.

Relapse of request ``j`` at step ``k`` is the change since step ``j`` (when it was unlearned):
``Acc_k(D_f^(j)) - Acc_j(D_f^(j))`` (up = relapse) and ``MIA_j - MIA_k`` (down = relapse);
:func:`relapse_deltas` computes them from the per-step values. Pure torch (no Lightning).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Literal, Optional, Union

import torch
from torch import Tensor, nn

from lightning_unlearn.metrics._svc import GammaType, fit_rbf_svc
from lightning_unlearn.metrics.functional.mia import Backend, _check_mia_args, _mia_efficacy_update, true_class_confidence

__all__ = ["RELAPSE_ROW_KEYS", "relapse_deltas", "relapse_metrics", "relapse_rows"]

#: The numbers of a relapse row (:func:`relapse_rows`), in percent / points.
RELAPSE_ROW_KEYS = ("forget_acc", "mia_efficacy", "delta_forget_acc", "delta_mia")


@torch.no_grad()
def relapse_metrics(
    model: nn.Module,
    earlier: Sequence[Iterable],
    retain: Iterable,
    test: Iterable,
    device: Union[str, torch.device, None] = None,
    mia_backend: Literal["torch", "sklearn"] = "torch",
) -> list[dict[str, float]]:
    """Forget accuracy, UA and MIA-efficacy of ``model`` on each earlier forget set.

    Args:
        model: the classifier after the current step (eval mode is used; its mode is restored).
        earlier: one loader of ``(x, y)`` per earlier forget set, oldest first.
        retain: the current retain set in dataset order (only its first ``|test|`` rows are read:
            the attack's members).
        test: the test set (the attack's non-members).
        device: where to run (default: the model's).
        mia_backend: ``"torch"`` (native solver) or ``"sklearn"``.

    Returns:
        One ``{"forget_acc", "unlearning_accuracy", "mia_efficacy"}`` dict (fractions) per earlier
        set, in order; ``[]`` when there is none.

    Example::

        >>> import torch
        >>> from torch import nn
        >>> x = torch.eye(4)
        >>> net = nn.Linear(4, 2)
        >>> rows = relapse_metrics(net, [[(x[:2], torch.tensor([0, 1]))]], [(x, torch.zeros(4, dtype=torch.long))],
        ...                        [(x, torch.ones(4, dtype=torch.long))])
        >>> sorted(rows[0])
        ['forget_acc', 'mia_efficacy', 'unlearning_accuracy']
    """
    _check_mia_args(mia_backend, 3.0, "auto")
    if not earlier:
        return []
    if device is None:
        device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        test_conf = torch.cat([_confidence(model, x, y, device) for x, y in test])
        retain_conf, seen = [], 0
        for x, y in retain:
            retain_conf.append(_confidence(model, x, y, device))
            seen += len(y)
            if seen >= len(test_conf):
                break
        sets = []
        for loader in earlier:
            conf, correct, total = [], 0, 0
            for x, y in loader:
                x, y = x.to(device), y.to(device)
                logits = model(x)
                conf.append(true_class_confidence(logits, y))
                correct += int((logits.argmax(-1) == y).sum())
                total += len(y)
            sets.append((torch.cat(conf), correct / max(total, 1)))
    finally:
        model.train(was_training)
    x_attack, y_attack, _ = _mia_efficacy_update(torch.cat(retain_conf), test_conf, sets[0][0])
    predict = _attack(x_attack, y_attack, mia_backend)
    out = []
    for forget_conf, accuracy in sets:
        mia = float((predict(forget_conf.reshape(-1, 1).to(x_attack.dtype)) == 0).float().mean())
        out.append({"forget_acc": accuracy, "unlearning_accuracy": 1.0 - accuracy, "mia_efficacy": mia})
    return out


def relapse_deltas(
    per_step: Sequence[Sequence[Mapping[str, float]]], own: Sequence[Mapping[str, float]]
) -> list[list[dict[str, float]]]:
    """Relapse as changes since each request was unlearned.

    Args:
        per_step: ``per_step[k][j]`` = :func:`relapse_metrics` row of earlier set ``j`` after step
            ``k`` (so ``per_step[k]`` has ``k`` rows).
        own: ``own[j]`` = the metrics of request ``j`` right after its own step (its
            ``forget_acc`` and ``mia_efficacy``).

    Returns:
        ``out[k][j] = {"forget_acc": Acc_k - Acc_j, "mia_efficacy": MIA_j - MIA_k}``: positive
        numbers are relapse (forgotten data became more recognisable).

    Example::

        >>> relapse_deltas([[], [{"forget_acc": 0.5, "mia_efficacy": 0.5}]], [{"forget_acc": 0.25, "mia_efficacy": 1.0}])
        [[], [{'forget_acc': 0.25, 'mia_efficacy': 0.5}]]
    """
    return [
        [
            {"forget_acc": row["forget_acc"] - own[j]["forget_acc"], "mia_efficacy": own[j]["mia_efficacy"] - row["mia_efficacy"]}
            for j, row in enumerate(rows)
        ]
        for rows in per_step
    ]


def relapse_rows(relapse: Sequence[Mapping[str, float]], own: Sequence[Mapping[str, Optional[float]]]) -> list[dict[str, float]]:
    """Table rows of one step's relapse, in percent (2 decimals): per earlier request ``j``,
    ``request``, ``forget_acc``, ``mia_efficacy`` and their changes since request ``j`` was
    unlearned, ``delta_forget_acc`` (up = relapse) and ``delta_mia`` (down = relapse).

    Args:
        relapse: :func:`relapse_metrics` of the step (fractions).
        own: ``own[j]`` = request ``j``'s metrics right after its own step (fractions).
    """
    out = []
    for j, row in enumerate(relapse):
        own_forget_acc, own_mia = own[j]["forget_acc"], own[j]["mia_efficacy"]
        if own_forget_acc is None or own_mia is None:
            raise ValueError(f"Request {j}'s own metrics are None (not finite: the model diverged): no relapse to measure.")
        out.append(
            {
                "request": j,
                "forget_acc": round(100 * row["forget_acc"], 2),
                "mia_efficacy": round(100 * row["mia_efficacy"], 2),
                "delta_forget_acc": round(100 * (row["forget_acc"] - own_forget_acc), 2),
                "delta_mia": round(100 * (row["mia_efficacy"] - own_mia), 2),
            }
        )
    return out


def _confidence(model: nn.Module, x: Tensor, y: Tensor, device: Union[str, torch.device]) -> Tensor:
    return true_class_confidence(model(x.to(device)), y.to(device))


def _attack(x_attack: Tensor, y_attack: Tensor, backend: Backend, C: float = 3.0, gamma: GammaType = "auto"):
    """The fitted OPTML attack's ``predict`` (1 = member, 0 = non-member)."""
    if backend == "sklearn":
        from sklearn.svm import SVC

        clf = SVC(C=C, gamma=gamma, kernel="rbf").fit(x_attack.cpu().double().numpy(), y_attack.cpu().numpy())
        return lambda x: torch.from_numpy(clf.predict(x.cpu().double().numpy()))
    svc = fit_rbf_svc(x_attack, y_attack, C=C, gamma=gamma)
    return svc.predict
