"""Membership-inference attacks on a classifier's outputs: the functional twins of
:mod:`lightning_unlearn.metrics.attacks`.

**Sign convention.** Every per-sample *score* here is oriented so that a HIGHER score means
"looks like a training member": the loss score is ``-CE = log p_y``, the confidence score
``p_y``, the entropy score ``-H(p)``, the modified-entropy score ``-Mentr(p, y)``. An attack's
ROC AUC is then the probability that a random member outscores a random non-member:

* forget-vs-test AUC: ``0.5`` = the forget set looks like unseen data; ``1`` = it is recognised
  as training data (**higher = remembered**). The target is the retrained model's value (about
  0.5 for a random forget set; far below 0.5 for a forgotten class, whose examples are
  misclassified by Retrain);
* retain-vs-test AUC: the same attack on data that must stay learned (a scale: how strong the
  attack is on this model at all).

Sources:

* Song & Mittal, "Systematic Evaluation of Privacy Risks of Machine Learning Models" (USENIX
  Security 2021): threshold attacks on confidence, entropy and modified entropy
  ``Mentr(p, y) = -(1 - p_y) log p_y - sum_{i != y} p_i log(1 - p_i)``. Implemented as in the
  paper: the OPTML reference code's ``m_entropy`` indexes columns with the label vector and uses
  ``log(p)`` for ``log(1 - p)`` (``ALGORITHMS.md`` §8.6), which is not this quantity.
* SSD / Bad Teacher (``metrics.py`` of if-loops/selective-synaptic-dampening and
  vikram2000b/bad-teaching-unlearning): a class-balanced logistic regression on the softmax
  entropy, fitted on retain (members) vs test (non-members) and applied to the forget set.
* SCRUB (meghdadk/SCRUB ``MIA_experiments.ipynb``, after the NeurIPS 2023 challenge kit): per-sample
  losses of the forget set vs test samples of the same classes, balanced by subsampling, logistic
  regression, accuracy under 5-split stratified shuffle-split cross-validation (ideal 0.5).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, Optional, Union

import torch
from torch import Tensor

AttackKind = Literal["loss", "confidence", "entropy", "modified_entropy"]
#: The threshold attacks, each a per-sample score where higher = member-like.
THRESHOLD_ATTACKS: tuple[AttackKind, ...] = ("loss", "confidence", "entropy", "modified_entropy")
#: The (members, non-members) pairs every threshold attack is scored on.
ATTACK_PAIRS: dict[str, tuple[str, str]] = {"forget_vs_test": ("forget", "test"), "retain_vs_test": ("retain", "test")}
#: The low false-positive rates of ``tpr_at_fpr`` reported by default.
DEFAULT_FPRS: tuple[float, ...] = (0.01, 0.001)
Backend = Literal["torch", "sklearn"]


# --------------------------------------------------------------------------- per-sample statistics
def _check_logits_target(logits: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    if not isinstance(logits, Tensor) or logits.ndim != 2 or not logits.is_floating_point() or logits.shape[1] < 2:
        shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise ValueError(f"`logits` must be a floating (N, C) tensor with C >= 2, got {shape}.")
    if not isinstance(target, Tensor) or target.ndim != 1 or target.is_floating_point() or target.dtype == torch.bool:
        raise ValueError("`target` must be an integer (N,) tensor of class labels; use `target.long()`.")
    if target.shape[0] != logits.shape[0]:
        raise ValueError(
            f"`logits` and `target` must have the same number of samples, got {logits.shape[0]} and {target.shape[0]}."
        )
    target = target.to(logits.device).long()
    if target.numel() and bool((target < 0).any() | (target >= logits.shape[1]).any()):
        raise ValueError(f"`target` labels must lie in [0, {logits.shape[1]}) for `logits` with {logits.shape[1]} classes.")
    return logits.to(torch.float64), target


def _log_one_minus_probs(z: Tensor, log_probs: Tensor) -> Tensor:
    """``log(1 - p_i)`` for every class, stable: ``log1p(-p)`` for all classes, and for the most
    probable class (the only one that can have ``p >= 1/2``) ``logsumexp`` of the other logits
    minus ``logsumexp`` of all."""
    out = torch.log1p(-log_probs.exp())
    top = z.argmax(dim=1, keepdim=True)
    others = z.scatter(1, top, float("-inf")).logsumexp(dim=1, keepdim=True) - z.logsumexp(dim=1, keepdim=True)
    return out.scatter(1, top, others)


def sample_statistics(logits: Tensor, target: Tensor) -> dict[str, Tensor]:
    """Per-sample statistics every attack and audit reads, computed once in float64.

    Args:
        logits: ``(N, C)`` logits, any floating dtype, ``C >= 2``.
        target: ``(N,)`` integer labels in ``[0, C)``.

    Returns:
        ``(N,)`` float64 tensors on the device of ``logits``:

        * ``log_p``: ``log p_y`` (``-`` the cross-entropy loss);
        * ``entropy``: ``H(p) = -sum_i p_i log p_i`` (nats);
        * ``modified_entropy``: Song & Mittal's ``Mentr(p, y)`` (nats, >= 0);
        * ``margin``: ``z_y - logsumexp_{j != y} z_j`` = ``log p_y - log(1 - p_y)``, the
          logit-scaled confidence of LiRA, KLoM and the NeurIPS 2023 challenge.

    Raises:
        ValueError: on wrong shapes, dtypes or labels.

    Example:
        >>> import torch
        >>> s = sample_statistics(torch.tensor([[2.0, 0.0], [0.0, 0.0]]), torch.tensor([0, 1]))
        >>> [round(float(v), 4) for v in s["margin"]], [round(float(v), 4) for v in s["entropy"]]
        ([2.0, 0.0], [0.3653, 0.6931])
    """
    z, target = _check_logits_target(logits, target)
    log_probs = torch.log_softmax(z, dim=1)
    probs = log_probs.exp()
    log_p = log_probs.gather(1, target.unsqueeze(1)).squeeze(1)
    log_rest = _log_one_minus_probs(z, log_probs)
    entropy = -(probs * log_probs).nan_to_num(nan=0.0).sum(dim=1)
    others = torch.ones_like(probs, dtype=torch.bool).scatter(1, target.unsqueeze(1), False)
    log_rest_y = log_rest.gather(1, target.unsqueeze(1)).squeeze(1)
    m_entropy = -log_rest_y.exp() * log_p - torch.where(others, probs * log_rest, torch.zeros_like(probs)).sum(dim=1)
    margin = z.gather(1, target.unsqueeze(1)).squeeze(1) - z.masked_fill(~others, float("-inf")).logsumexp(dim=1)
    return {"log_p": log_p, "entropy": entropy, "modified_entropy": m_entropy.clamp_min(0.0), "margin": margin}


def logit_margins(logits: Tensor, target: Tensor) -> Tensor:
    """``z_y - logsumexp_{j != y} z_j`` per sample (float64): the statistic of KLoM, LiRA/U-LiRA and
    the NeurIPS 2023 challenge (equal to ``log(p_y / (1 - p_y))``, computed without rounding
    ``p_y`` to 1).

    Example:
        >>> import torch
        >>> logit_margins(torch.tensor([[3.0, 1.0, 1.0]]), torch.tensor([0]))
        tensor([1.3069], dtype=torch.float64)
    """
    return sample_statistics(logits, target)["margin"]


def attack_scores(statistics: dict[str, Tensor], kind: AttackKind) -> Tensor:
    """The member score of a threshold attack from :func:`sample_statistics` (higher = member):
    ``loss``: ``log p_y``; ``confidence``: ``p_y``; ``entropy``: ``-H``; ``modified_entropy``: ``-Mentr``.

    Raises:
        ValueError: an unknown ``kind``.
    """
    if kind == "loss":
        return statistics["log_p"]
    if kind == "confidence":
        return statistics["log_p"].exp()
    if kind == "entropy":
        return -statistics["entropy"]
    if kind == "modified_entropy":
        return -statistics["modified_entropy"]
    raise ValueError(f"`kind` must be one of {THRESHOLD_ATTACKS}, got {kind!r}.")


# --------------------------------------------------------------------------- ROC
def _check_scores(members: Tensor, non_members: Tensor) -> tuple[Tensor, Tensor]:
    for name, value in (("members", members), ("non_members", non_members)):
        if not isinstance(value, Tensor) or value.ndim != 1 or value.numel() == 0:
            raise ValueError(f"`{name}` must be a non-empty (N,) tensor of scores.")
        if not bool(torch.isfinite(value.double()).all()):
            raise ValueError(f"`{name}` holds NaN or inf scores.")
    return members.double(), non_members.double().to(members.device)


def roc_auc(members: Tensor, non_members: Tensor) -> Tensor:
    """ROC AUC of the attack "higher score = member": ``P(s_member > s_non) + P(tie) / 2`` (the
    Mann-Whitney statistic with average ranks for ties; equal to
    ``sklearn.metrics.roc_auc_score([1]*m + [0]*n, concat(members, non_members))``).

    Args:
        members: ``(m,)`` scores of members (positives).
        non_members: ``(n,)`` scores of non-members.

    Returns:
        0-d float64 tensor in ``[0, 1]`` on the device of ``members``.

    Example:
        >>> import torch
        >>> roc_auc(torch.tensor([0.9, 0.8, 0.4]), torch.tensor([0.5, 0.4, 0.1]))
        tensor(0.8333, dtype=torch.float64)
    """
    members, non_members = _check_scores(members, non_members)
    values = torch.cat([members, non_members])
    sorted_values, order = torch.sort(values)
    _, inverse, counts = torch.unique_consecutive(sorted_values, return_inverse=True, return_counts=True)
    ends = torch.cumsum(counts, 0).double()
    average_rank = (ends - (counts.double() - 1.0) / 2.0)[inverse]  # 1-based ranks, ties averaged
    ranks = torch.empty_like(average_rank).scatter_(0, order, average_rank)
    m, n = members.numel(), non_members.numel()
    return (ranks[:m].sum() - m * (m + 1) / 2.0) / (m * n)


def roc_curve(members: Tensor, non_members: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Operating points of "member if score >= t" for every distinct score ``t`` (descending),
    starting at ``(fpr, tpr) = (0, 0)`` (``t = +inf``).

    Returns:
        ``(fpr, tpr, thresholds)``, float64, each ``(K + 1,)``; ``thresholds[0] = inf``.
    """
    members, non_members = _check_scores(members, non_members)
    values = torch.cat([members, non_members])
    labels = torch.cat([torch.ones_like(members), torch.zeros_like(non_members)])
    order = torch.argsort(values, descending=True, stable=True)
    values, labels = values[order], labels[order]
    tp, fp = torch.cumsum(labels, 0), torch.cumsum(1.0 - labels, 0)
    last = torch.ones_like(values, dtype=torch.bool)
    last[:-1] = values[1:] != values[:-1]  # the last occurrence of each distinct value
    zero = values.new_zeros(1)
    fpr = torch.cat([zero, fp[last] / non_members.numel()])
    tpr = torch.cat([zero, tp[last] / members.numel()])
    thresholds = torch.cat([values.new_full((1,), float("inf")), values[last]])
    return fpr, tpr, thresholds


def tpr_at_fpr(members: Tensor, non_members: Tensor, fpr: float) -> Tensor:
    """The highest true-positive rate of "member if score >= t" over the thresholds whose
    false-positive rate is at most ``fpr`` (no interpolation between operating points; with
    ``n`` non-members an FPR below ``1/n`` means no false positive at all).

    Example:
        >>> import torch
        >>> members = torch.tensor([10.0, 9.0, 0.5, 0.2])
        >>> non = torch.cat([torch.arange(99.0) / 100, torch.tensor([9.5])])  # one non-member above 9
        >>> float(tpr_at_fpr(members, non, 0.01)), float(tpr_at_fpr(members, non, 0.001))
        (0.5, 0.25)
    """
    if not 0.0 <= float(fpr) <= 1.0:
        raise ValueError(f"`fpr` must be a rate in [0, 1], got {fpr!r}.")
    rates, tprs, _ = roc_curve(members, non_members)
    return tprs[rates <= float(fpr) + 1e-12].max()


def threshold_attack(members: Tensor, non_members: Tensor, fprs: Sequence[float] = DEFAULT_FPRS) -> dict[str, Tensor]:
    """AUC and TPR at each low FPR of one threshold attack (higher score = member).

    Returns:
        ``{"auc": ..., "tpr@<fpr>": ...}`` (e.g. ``tpr@0.01``), 0-d float64 tensors.
    """
    out = {"auc": roc_auc(members, non_members)}
    for rate in fprs:
        out[f"tpr@{rate:g}"] = tpr_at_fpr(members, non_members, rate)
    return out


def threshold_attacks(
    statistics: dict[str, dict[str, Tensor]],
    attacks: Sequence[AttackKind] = THRESHOLD_ATTACKS,
    fprs: Sequence[float] = DEFAULT_FPRS,
) -> dict[str, dict[str, dict[str, Tensor]]]:
    """Every threshold attack on both pairs: ``{attack: {pair: {"auc", "tpr@..."}}}``.

    Args:
        statistics: ``{"forget": ..., "retain": ..., "test": ...}``, each from :func:`sample_statistics`.
        attacks: a subset of :data:`THRESHOLD_ATTACKS`.
        fprs: the low false-positive rates.
    """
    out: dict[str, dict[str, dict[str, Tensor]]] = {}
    for attack in attacks:
        out[attack] = {}
        for pair, (member, non_member) in ATTACK_PAIRS.items():
            out[attack][pair] = threshold_attack(
                attack_scores(statistics[member], attack), attack_scores(statistics[non_member], attack), fprs
            )
    return out


# --------------------------------------------------------------------------- logistic regression
def fit_logistic_regression(
    x: Tensor,
    y: Tensor,
    *,
    C: float = 1.0,
    class_weight: Optional[Literal["balanced"]] = None,
    max_iter: int = 100,
    tol: float = 1e-10,
) -> tuple[Tensor, Tensor]:
    """Binary L2-regularised logistic regression, solved by damped Newton in float64 on the
    inputs' device: minimises ``C * sum_i s_i log(1 + exp(-t_i (w.x_i + b))) + ||w||^2 / 2``
    (``t_i = +-1``, ``b`` unpenalised, ``s_i`` = 1 or the "balanced" class weights
    ``N / (2 N_class)``), which is ``sklearn.linear_model.LogisticRegression(C=C,
    class_weight=class_weight)``'s objective (lbfgs); the same minimiser to ~1e-8.

    Args:
        x: ``(N,)`` or ``(N, d)`` features (small ``d``).
        y: ``(N,)`` labels in ``{0, 1}`` (both present).
        C: inverse regularisation strength.
        class_weight: ``None`` or ``"balanced"``.

    Returns:
        ``(w, b)``: ``(d,)`` and 0-d float64 tensors; predict 1 where ``x @ w + b > 0``.

    Raises:
        ValueError: one class missing, mismatched shapes or a non-positive ``C``.
    """
    x = x.double().reshape(x.shape[0], -1)
    y = y.to(x.device).double()
    if y.shape[0] != x.shape[0] or not bool(((y == 0) | (y == 1)).all()):
        raise ValueError("`y` must hold one label in {0, 1} per row of `x`.")
    positives = float(y.sum())
    if positives == 0 or positives == y.numel():
        raise ValueError("logistic regression needs both classes in `y`.")
    if not C > 0:
        raise ValueError(f"`C` must be > 0, got {C!r}.")
    n, d = x.shape
    weights = torch.ones_like(y)
    if class_weight == "balanced":
        weights = torch.where(y == 1, n / (2.0 * positives), n / (2.0 * (n - positives)))
    signs = 2.0 * y - 1.0
    design = torch.cat([x, torch.ones(n, 1, dtype=x.dtype, device=x.device)], dim=1)
    penalty = torch.ones(d + 1, dtype=x.dtype, device=x.device)
    penalty[-1] = 0.0
    theta = torch.zeros(d + 1, dtype=x.dtype, device=x.device)

    def objective(t: Tensor) -> Tensor:
        return C * (weights * torch.nn.functional.softplus(-signs * (design @ t))).sum() + 0.5 * (penalty * t * t).sum()

    value = objective(theta)
    for _ in range(max_iter):
        margin = signs * (design @ theta)
        sigma = torch.sigmoid(-margin)  # d/dm softplus(-m) = -sigma
        grad = -C * design.T @ (weights * signs * sigma) + penalty * theta
        curvature = C * weights * sigma * (1.0 - sigma)
        hessian = (
            design.T @ (design * curvature[:, None])
            + torch.diag(penalty)
            + 1e-12 * torch.eye(d + 1, dtype=x.dtype, device=x.device)
        )
        step = torch.linalg.solve(hessian, grad)
        decrement = float(grad @ step)
        t = 1.0
        while t > 1e-10:
            candidate = theta - t * step
            new_value = objective(candidate)
            if float(new_value) <= float(value) - 1e-4 * t * decrement:
                break
            t *= 0.5
        else:
            break
        theta, value = candidate, new_value
        if decrement / 2.0 < tol * max(1.0, abs(float(value))):
            break
    return theta[:-1], theta[-1]


def _lr_predict(x: Tensor, w: Tensor, b: Tensor) -> Tensor:
    return (x.double().reshape(x.shape[0], -1) @ w + b) > 0


def entropy_mia(
    retain_entropy: Tensor, test_entropy: Tensor, forget_entropy: Tensor, *, backend: Backend = "torch", C: float = 1.0
) -> Tensor:
    """SSD / Bad Teacher entropy attack: a class-balanced logistic regression on the softmax
    entropy, fitted on every retain sample (members, 1) vs every test sample (non-members, 0),
    applied to the forget set.

    **Sign convention:** returns the fraction of the forget set predicted *member*: **higher =
    remembered**; compare with the retrained model's value (not 0).

    Args:
        retain_entropy, test_entropy, forget_entropy: ``(N,)`` entropies (``sample_statistics``).
        backend: ``"torch"`` (native Newton solver, on the inputs' device) or ``"sklearn"``
            (``LogisticRegression(class_weight="balanced")``, CPU).
        C: inverse regularisation (sklearn's default 1; the reference passes
            ``multi_class="multinomial"``, which for two classes equals ``C=2``).

    Returns:
        0-d float32 tensor in ``[0, 1]``.

    Example:
        >>> import torch
        >>> retain = torch.tensor([0.01, 0.02, 0.03, 0.05])
        >>> test = torch.tensor([0.9, 1.1, 0.7, 1.3])
        >>> entropy_mia(retain, test, torch.tensor([0.02, 1.0]))
        tensor(0.5000)
    """
    x = torch.cat([retain_entropy.double(), test_entropy.double().to(retain_entropy.device)])
    y = torch.cat(
        [
            torch.ones_like(retain_entropy, dtype=torch.long),
            torch.zeros(test_entropy.numel(), dtype=torch.long, device=retain_entropy.device),
        ]
    )
    if backend == "sklearn":
        from sklearn.linear_model import LogisticRegression

        clf = LogisticRegression(class_weight="balanced", C=C).fit(x.cpu().numpy().reshape(-1, 1), y.cpu().numpy())
        member = torch.from_numpy(clf.predict(forget_entropy.double().cpu().numpy().reshape(-1, 1)) == 1)
    elif backend == "torch":
        w, b = fit_logistic_regression(x, y, C=C, class_weight="balanced")
        member = _lr_predict(forget_entropy.to(x.device), w, b)
    else:
        raise ValueError(f"`backend` must be 'torch' or 'sklearn', got {backend!r}.")
    return member.to(device=forget_entropy.device, dtype=torch.float32).mean()


def stratified_shuffle_splits(
    labels: Tensor, n_splits: int = 5, test_fraction: float = 0.1, seed: int = 0
) -> list[tuple[Tensor, Tensor]]:
    """``n_splits`` random (train, test) index splits, each holding out ``ceil(test_fraction * n_c)``
    of every class ``c`` (at least one), drawn from a CPU generator seeded by ``seed`` (the
    global random state is untouched). Indices are on the device of ``labels``."""
    generator = torch.Generator().manual_seed(int(seed))
    labels_cpu = labels.detach().cpu()
    splits = []
    for _ in range(n_splits):
        train, test = [], []
        for value in torch.unique(labels_cpu):
            members = (labels_cpu == value).nonzero().flatten()
            members = members[torch.randperm(members.numel(), generator=generator)]
            k = max(1, int(-(-test_fraction * members.numel() // 1)))
            test.append(members[:k])
            train.append(members[k:])
        splits.append((torch.cat(train).sort().values.to(labels.device), torch.cat(test).sort().values.to(labels.device)))
    return splits


def loss_mia(
    forget_loss: Tensor,
    forget_labels: Tensor,
    test_loss: Tensor,
    test_labels: Tensor,
    *,
    n_splits: int = 5,
    test_fraction: float = 0.1,
    seed: int = 0,
    backend: Backend = "torch",
) -> Tensor:
    """SCRUB's loss attack: per-sample losses of the forget set (members, 1) vs those of test
    samples of the same classes (0), balanced by subsampling the larger side (seeded), a logistic
    regression on the loss, and its accuracy under ``n_splits`` stratified shuffle splits
    (``test_fraction`` held out per class, sklearn's default 0.1).

    **Sign convention:** a cross-validated accuracy; **0.5 = forgotten** (the attacker cannot tell
    forgotten examples from unseen ones of the same classes), higher = remembered. Compare with
    the retrained model's value.

    Args:
        forget_loss, test_loss: ``(N,)`` cross-entropy losses (``-log_p``).
        forget_labels, test_labels: their class labels (test samples of other classes are ignored).
        n_splits, test_fraction, seed: the cross-validation.
        backend: ``"torch"`` (native solver) or ``"sklearn"`` (``LogisticRegression()`` on the same splits).

    Returns:
        0-d float32 tensor in ``[0, 1]``; ``nan`` when no test sample shares a class with the
        forget set.
    """
    device = forget_loss.device
    same = torch.isin(test_labels.to(device), forget_labels.to(device))
    test_loss = test_loss.to(device)[same]
    if test_loss.numel() == 0:
        return torch.tensor(float("nan"), device=device)
    generator = torch.Generator().manual_seed(int(seed))
    n = min(forget_loss.numel(), test_loss.numel())
    pick_f = torch.randperm(forget_loss.numel(), generator=generator)[:n].to(device)
    pick_t = torch.randperm(test_loss.numel(), generator=generator)[:n].to(device)
    x = torch.cat([forget_loss.double()[pick_f], test_loss.double()[pick_t]])
    y = torch.cat([torch.ones(n, dtype=torch.long, device=device), torch.zeros(n, dtype=torch.long, device=device)])
    scores = []
    for train, test in stratified_shuffle_splits(y, n_splits, test_fraction, seed):
        if backend == "sklearn":
            from sklearn.linear_model import LogisticRegression

            clf = LogisticRegression().fit(x[train].cpu().numpy().reshape(-1, 1), y[train].cpu().numpy())
            pred = torch.from_numpy(clf.predict(x[test].cpu().numpy().reshape(-1, 1))).to(device)
        elif backend == "torch":
            w, b = fit_logistic_regression(x[train], y[train])
            pred = _lr_predict(x[test], w, b).long()
        else:
            raise ValueError(f"`backend` must be 'torch' or 'sklearn', got {backend!r}.")
        scores.append((pred == y[test]).double().mean())
    return torch.stack(scores).mean().float()


def membership_audit(
    statistics: dict[str, dict[str, Tensor]],
    labels: dict[str, Tensor],
    *,
    attacks: Sequence[AttackKind] = THRESHOLD_ATTACKS,
    fprs: Sequence[float] = DEFAULT_FPRS,
    backend: Backend = "torch",
    seed: int = 0,
) -> dict[str, Union[float, dict]]:
    """Every population attack at once, as plain floats: the threshold attacks, the entropy
    attack (``entropy_lr_member_rate``) and the SCRUB loss attack (``loss_cv_accuracy``).

    Args:
        statistics: per split (``forget``, ``retain``, ``test``) the dict of :func:`sample_statistics`.
        labels: per split the ``(N,)`` labels.
    """
    thresholds = threshold_attacks(statistics, attacks, fprs)
    out: dict[str, Union[float, dict]] = {
        "threshold": {a: {p: {k: float(v) for k, v in r.items()} for p, r in pairs.items()} for a, pairs in thresholds.items()},
        "entropy_lr_member_rate": float(
            entropy_mia(
                statistics["retain"]["entropy"], statistics["test"]["entropy"], statistics["forget"]["entropy"], backend=backend
            )
        ),
        "loss_cv_accuracy": float(
            loss_mia(
                -statistics["forget"]["log_p"],
                labels["forget"],
                -statistics["test"]["log_p"],
                labels["test"],
                seed=seed,
                backend=backend,
            )
        ),
    }
    return out
