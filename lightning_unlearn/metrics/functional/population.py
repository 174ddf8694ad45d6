"""Per-example audits over model populations: KLoM, the NeurIPS 2023 unlearning-challenge score
and U-LiRA, computed offline from saved margins.

Every function takes margins ``m(x, y) = z_y - logsumexp_{j != y} z_j`` (see
:func:`~lightning_unlearn.metrics.functional.attacks.logit_margins`) of two populations of models
on the same examples: ``unlearned`` (``(N, n)``: N models, each an original trained with its own
seed and then unlearned) and ``oracle`` / ``retrained`` (``(M, n)``: M models retrained without
the forget set, other seeds). Each example is judged on its own column: the result for an
example does not depend on the other examples, so batches of columns can be processed apart and
merged.

* :func:`klom` — KL divergence between the two margin distributions of each example (Georgiev et
  al., ICLR 2025; RoyRin/data-unlearning-bench ``eval.py``). **0 = indistinguishable from
  retraining; higher = further from it.**
* :func:`epsilon_scores` / :func:`challenge_score` — the NeurIPS 2023 unlearning challenge
  (Triantafillou et al. 2024; the organisers' ``metric.py``): a per-example privacy degree
  epsilon estimated from the best threshold attack telling the two populations apart, turned into
  points (1 for epsilon < 0.5, halved per further 0.5) and averaged. **Higher score = better
  unlearning** (1 = every example indistinguishable).
* :func:`ulira` — U-LiRA (Hayes et al. 2024): per-example Gaussian likelihood-ratio test of
  "unlearned" vs "retrained", each target model held out of the fit; balanced accuracy. **0.5 =
  forgotten (the attacker is guessing), higher = remembered.**
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor

#: The challenge's constants (organisers' ``metric.py``): delta, the epsilon cap, the bucket width.
CHALLENGE_DELTA = 1e-5
EPSILON_CAP = 50.0
BUCKET_WIDTH = 0.5
_DOUBLE_THRESHOLD_BUFFER = 2.0


def _check_populations(a: Tensor, b: Tensor, names: tuple[str, str], minimum: int = 1) -> tuple[Tensor, Tensor]:
    for name, value in zip(names, (a, b)):
        if not isinstance(value, Tensor) or value.ndim != 2 or not value.is_floating_point():
            raise ValueError(
                f"`{name}` must be a floating (models, examples) tensor, got "
                f"{tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__}."
            )
        if value.shape[0] < minimum:
            raise ValueError(f"`{name}` holds {value.shape[0]} model(s); this audit needs at least {minimum}.")
        if not bool(torch.isfinite(value).all()):
            raise ValueError(f"`{name}` holds NaN or inf margins.")
    if a.shape[1] != b.shape[1]:
        raise ValueError(
            f"`{names[0]}` and `{names[1]}` cover {a.shape[1]} and {b.shape[1]} examples: give both populations the same examples."
        )
    return a.double(), b.double().to(a.device)


# ------------------------------------------------------------------------------------------- KLoM
def klom(
    unlearned: Tensor,
    oracle: Tensor,
    *,
    bins: int = 20,
    eps: float = 1e-5,
    clip: float = 100.0,
    direction: Literal["unlearned_oracle", "oracle_unlearned"] = "unlearned_oracle",
) -> Tensor:
    """KL divergence of margins, per example (KLoM).

    For each example: clip both samples of margins to ``[-clip, clip]``, cut the joint range
    ``[min, max]`` into ``bins`` equal bins (a range of width 0 becomes ``[min, min + 1]``), take
    the bin frequencies ``p`` (first population) and ``q`` (second), floor ``q`` at ``eps`` where
    ``p > 0``, renormalise ``q`` and return ``sum p log(p / q)`` (``scipy.stats.entropy(p, q)``).

    ``direction="unlearned_oracle"`` (default) is ``KL(unlearned || oracle)``, as
    data-unlearning-bench's ``kl_from_margins`` calls ``compute_binned_KL_div(unlearned, oracle)``;
    ``"oracle_unlearned"`` swaps them. Deviation: the reference counts samples with
    ``np.digitize`` over the bin edges, which leaves the sample equal to the maximum out of every
    bin; here the last bin is closed, as in ``np.histogram``.

    Args:
        unlearned: ``(N, n)`` margins of N unlearned models on n examples.
        oracle: ``(M, n)`` margins of M retrained models on the same examples.
        bins, eps, clip: the reference's 20, 1e-5, 100.
        direction: which population is ``p``.

    Returns:
        ``(n,)`` float64, >= 0 (0 = same histogram).

    Example:
        >>> import torch
        >>> a = torch.tensor([[0.0], [1.0], [2.0], [3.0]])
        >>> float(klom(a, a.clone())[0])
        0.0
        >>> round(float(klom(a + 10.0, a)[0]), 3)
        10.127
    """
    unlearned, oracle = _check_populations(unlearned, oracle, ("unlearned", "oracle"))
    if not isinstance(bins, int) or bins < 1:
        raise ValueError(f"`bins` must be an integer >= 1, got {bins!r}.")
    if direction not in ("unlearned_oracle", "oracle_unlearned"):
        raise ValueError(f"`direction` must be 'unlearned_oracle' or 'oracle_unlearned', got {direction!r}.")
    p_arr, q_arr = (unlearned, oracle) if direction == "unlearned_oracle" else (oracle, unlearned)
    p_arr, q_arr = p_arr.clamp(-clip, clip), q_arr.clamp(-clip, clip)
    low = torch.minimum(p_arr.min(0).values, q_arr.min(0).values)
    high = torch.maximum(p_arr.max(0).values, q_arr.max(0).values)
    high = torch.where(high > low, high, low + 1.0)

    def frequencies(values: Tensor) -> Tensor:
        position = ((values - low) / (high - low) * bins).floor().long().clamp(0, bins - 1)
        counts = torch.zeros(values.shape[1], bins, dtype=torch.float64, device=values.device)
        counts.scatter_add_(1, position.T, torch.ones_like(position.T, dtype=torch.float64))
        return counts / values.shape[0]

    p, q = frequencies(p_arr), frequencies(q_arr)
    q = torch.where(p > 0, q.clamp_min(eps), q)
    q = q / q.sum(1, keepdim=True)
    terms = torch.where(p > 0, p * (p.clamp_min(1e-300).log() - q.clamp_min(1e-300).log()), torch.zeros_like(p))
    return terms.sum(1).clamp_min(0.0)


def summarise(values: Tensor, quantiles: Sequence[float] = (0.5, 0.95)) -> dict[str, float]:
    """``{"mean", "median", "p95", ...}`` of per-example values (``median`` = the 0.5 quantile,
    ``p<k>`` = the k-th percentile)."""
    values = values.double().flatten()
    if values.numel() == 0:
        raise ValueError("nothing to summarise: no example.")
    out = {"mean": float(values.mean())}
    for q in quantiles:
        out["median" if q == 0.5 else f"p{round(100 * q):d}"] = float(torch.quantile(values, q))
    return out


# ------------------------------------------------------------------------------- challenge score
def _epsilon_from_rates(fpr: Tensor, fnr: Tensor, tpr: Tensor, tnr: Tensor, delta: float) -> Tensor:
    """Epsilon of each threshold (``...`` x thresholds), the organisers' rules: both error rates
    0 with ``tpr = tnr = 1`` (perfect separation): inf; exactly one of them 0: discarded (nan);
    else ``max(log(1 - delta - fpr) - log fnr, log(1 - delta - fnr) - log fpr)``, at least 0."""
    with torch.no_grad():
        one = torch.log(1.0 - delta - fpr) - torch.log(fnr)
        two = torch.log(1.0 - delta - fnr) - torch.log(fpr)
        eps = torch.fmax(one, two).clamp_min(0.0)  # fmax ignores a nan term, as numpy's nanmax
    perfect = (fpr == 0) & (fnr == 0) & (tpr == 1) & (tnr == 1)
    one_zero = (fpr * fnr == 0) & ~perfect
    eps = torch.where(perfect, torch.full_like(eps, float("inf")), eps)
    return torch.where(one_zero, torch.full_like(eps, float("nan")), eps)


def epsilon_scores(unlearned: Tensor, retrained: Tensor, *, delta: float = CHALLENGE_DELTA, chunk: int = 256) -> Tensor:
    """Per-example privacy degree epsilon of the NeurIPS 2023 unlearning challenge.

    For each example, the population with the larger median margin is "positive". Two families
    of decision rules are tried: one threshold ("positive if m >= t") and an interval ("positive
    if l <= m <= r") around the peakier population (the one with the smaller range), with
    ``r - l`` within 2 of that range, as in the organisers' code. Every threshold where the rates
    change is evaluated (the organisers use a grid of 100 thresholds per unit of margin; this is
    its limit). Each rule's FPR and FNR give ``eps = max(log(1 - delta - FPR) - log FNR,
    log(1 - delta - FNR) - log FPR)``; rules with exactly one zero error rate are discarded,
    perfect separation is infinite; the example's epsilon is the largest, clipped to ``[0, 50]``.
    An example whose smaller range is below 1 % of the larger is given 50 (a collapsed
    distribution), as in the organisers' code.

    Args:
        unlearned: ``(N, n)`` margins of N unlearned models.
        retrained: ``(N, n)`` margins of N retrained models on the same examples.
        delta: the challenge's 1e-5.
        chunk: examples processed at once (memory ``~ chunk * (N + M)^3`` booleans).

    Returns:
        ``(n,)`` float64 epsilons in ``[0, 50]``; lower = better unlearning.
    """
    unlearned, retrained = _check_populations(unlearned, retrained, ("unlearned", "retrained"), minimum=2)
    if unlearned.shape[0] != retrained.shape[0]:
        raise ValueError(
            f"the challenge score compares populations of equal size, got {unlearned.shape[0]} unlearned and"
            f" {retrained.shape[0]} retrained models: use as many of each."
        )
    out = []
    for start in range(0, unlearned.shape[1], chunk):
        out.append(_epsilons(unlearned[:, start : start + chunk].T, retrained[:, start : start + chunk].T, delta))
    return torch.cat(out).clamp(0.0, EPSILON_CAP)


def _epsilons(u: Tensor, r: Tensor, delta: float) -> Tensor:
    """``u``, ``r``: (n, N) -> (n,) epsilons (see :func:`epsilon_scores`)."""
    retrain_positive = (r.median(1).values > u.median(1).values)[:, None]
    pos, neg = torch.where(retrain_positive, r, u), torch.where(retrain_positive, u, r)
    pos_range = pos.max(1).values - pos.min(1).values
    neg_range = neg.max(1).values - neg.min(1).values
    largest, smallest = torch.maximum(pos_range, neg_range), torch.minimum(pos_range, neg_range)
    pooled = torch.sort(torch.cat([pos, neg], 1), dim=1).values  # (n, 2N)

    # one threshold: positive if m >= t, t at every pooled value
    tpr = (pos[:, :, None] >= pooled[:, None, :]).double().mean(1)
    fpr = (neg[:, :, None] >= pooled[:, None, :]).double().mean(1)
    single = _epsilon_from_rates(fpr, 1.0 - tpr, tpr, 1.0 - fpr, delta)

    # an interval [l, r] around the peakier population (the organisers swap so that "positive" is it)
    peaky_is_neg = (pos_range >= neg_range)[:, None]
    interval = _interval_epsilon(
        torch.where(peaky_is_neg, neg, pos), torch.where(peaky_is_neg, pos, neg), pooled, smallest, delta
    )
    best = torch.fmax(torch.nan_to_num(single, nan=float("-inf")).max(1).values, interval)
    best = torch.where(torch.isinf(best) & (best < 0), torch.zeros_like(best), best)  # no rule survived: 0
    collapsed = (largest > 0) & (smallest / largest.clamp_min(1e-300) < 0.01)
    return torch.where(collapsed, torch.full_like(best, EPSILON_CAP), best)


def _interval_epsilon(peaky: Tensor, other: Tensor, pooled: Tensor, width: Tensor, delta: float) -> Tensor:
    """Best epsilon over the intervals [pooled_i, pooled_j] (i <= j) that a real interval of length
    within ``width +- 2`` can cut out of the pooled sample. (n,) with -inf when none is valid."""
    k = pooled.shape[1]
    low, high = pooled[:, :, None], pooled[:, None, :]  # (n, K, 1), (n, 1, K)
    inf = torch.full_like(pooled[:, :1], float("inf"))
    previous = torch.cat([-inf, pooled[:, :-1]], 1)  # the pooled value before each (a lower bound of l)
    following = torch.cat([pooled[:, 1:], inf], 1)
    span = high - low
    reach = following[:, None, :] - previous[:, :, None]
    w = width[:, None, None]
    valid = (span >= 0) & (span <= w + _DOUBLE_THRESHOLD_BUFFER) & (reach > w - _DOUBLE_THRESHOLD_BUFFER)
    valid &= torch.triu(torch.ones(k, k, dtype=torch.bool, device=pooled.device))[None]
    inside_p = ((peaky[:, :, None, None] >= low[:, None]) & (peaky[:, :, None, None] <= high[:, None])).double().mean(1)
    inside_o = ((other[:, :, None, None] >= low[:, None]) & (other[:, :, None, None] <= high[:, None])).double().mean(1)
    eps = _epsilon_from_rates(inside_o, 1.0 - inside_p, inside_p, 1.0 - inside_o, delta)
    eps = torch.where(valid & ~torch.isnan(eps), eps, torch.full_like(eps, float("-inf")))
    return eps.flatten(1).max(1).values


def challenge_score(epsilons: Tensor, num_models: int) -> Tensor:
    """The challenge's forgetting score from per-example epsilons: buckets of width 0.5 from 0 up
    to ``ceil(log(num_models - 1))`` (the largest epsilon ``num_models`` samples can show) worth
    1, 1/2, 1/4, ... points; an epsilon past the last bucket scores 0; the mean over examples.

    **Higher = better unlearning**: 1 = every example indistinguishable from retraining.

    Example:
        >>> import torch
        >>> float(challenge_score(torch.tensor([0.1, 0.7, 5.0]), num_models=16))
        0.5
    """
    if not isinstance(num_models, int) or num_models < 3:
        raise ValueError(f"`num_models` must be an integer >= 3, got {num_models!r}.")
    limit = math.ceil(math.log(num_models - 1))
    buckets = round(limit / BUCKET_WIDTH)
    index = torch.floor(epsilons.double() / BUCKET_WIDTH)
    points = torch.where(index < buckets, torch.pow(0.5, index.clamp_min(0)), torch.zeros_like(index))
    return points.mean()


# ---------------------------------------------------------------------------------------- U-LiRA
def _gaussian_log_density(x: Tensor, mean: Tensor, var: Tensor) -> Tensor:
    return -0.5 * (torch.log(2 * math.pi * var) + (x - mean) ** 2 / var)


def _held_out_fits(values: Tensor, variance: str) -> tuple[Tensor, Tensor]:
    """For each model k (row) the mean and variance of the other rows, per example: (N, n) each."""
    count = values.shape[0]
    total, squares = values.sum(0, keepdim=True), (values * values).sum(0, keepdim=True)
    mean = (total - values) / (count - 1)
    var = ((squares - values * values) - (count - 1) * mean * mean) / max(count - 2, 1)
    var = var.clamp_min(0.0)
    if variance == "global":
        var = var.mean(1, keepdim=True).expand_as(var)
    return mean, var.clamp_min(1e-8)


def ulira(
    unlearned: Tensor,
    retrained: Tensor,
    *,
    variance: Literal["auto", "per_example", "global"] = "auto",
    reduction: Literal["mean", "none"] = "mean",
) -> Tensor:
    """U-LiRA: per-example likelihood-ratio attack "unlearned" vs "retrained" (Hayes et al.,
    "Inexact unlearning needs more careful evaluations", 2024).

    For each example, Gaussians are fitted to its margins under the unlearned models and under
    the retrained models; each model in turn is the target, held out of its own population's fit
    (leave-one-out), and is called "unlearned" when its margin is likelier under the unlearned
    Gaussian. The result is the balanced accuracy ``(TPR + TNR) / 2``: **0.5 = forgotten (the
    attack guesses), 1 = every example's unlearning is visible**.

    Args:
        unlearned: ``(N, n)`` margins, N >= 3 unlearned models (each from an original with the
            example in its training set).
        retrained: ``(M, n)`` margins, M >= 3 retrained models (never saw the example).
        variance: ``"per_example"`` variances, one ``"global"`` variance per population (the
            average over examples; LiRA's choice for few models) or ``"auto"``: global below 64
            models per population.
        reduction: ``"mean"`` (one accuracy) or ``"none"`` (``(n,)``: each example's balanced accuracy).

    Returns:
        0-d or ``(n,)`` float64 accuracy in ``[0, 1]``.

    Example:
        >>> import torch
        >>> g = torch.Generator().manual_seed(0)
        >>> same = ulira(torch.randn(16, 200, generator=g), torch.randn(16, 200, generator=g))
        >>> apart = ulira(torch.randn(16, 200, generator=g) + 3, torch.randn(16, 200, generator=g))
        >>> 0.4 < float(same) < 0.6, float(apart) > 0.9
        (True, True)
    """
    unlearned, retrained = _check_populations(unlearned, retrained, ("unlearned", "retrained"), minimum=3)
    if variance not in ("auto", "per_example", "global"):
        raise ValueError(f"`variance` must be 'auto', 'per_example' or 'global', got {variance!r}.")
    if variance == "auto":
        variance = "global" if min(unlearned.shape[0], retrained.shape[0]) < 64 else "per_example"
    mean_u_all, mean_r_all = unlearned.mean(0, keepdim=True), retrained.mean(0, keepdim=True)
    var_u_all = unlearned.var(0, keepdim=True, unbiased=True)
    var_r_all = retrained.var(0, keepdim=True, unbiased=True)
    if variance == "global":
        var_u_all = var_u_all.mean(1, keepdim=True).expand_as(var_u_all)
        var_r_all = var_r_all.mean(1, keepdim=True).expand_as(var_r_all)
    var_u_all, var_r_all = var_u_all.clamp_min(1e-8), var_r_all.clamp_min(1e-8)
    mean_u, var_u = _held_out_fits(unlearned, variance)
    mean_r, var_r = _held_out_fits(retrained, variance)
    # unlearned targets: held out of the unlearned fit; the retrained fit uses every retrained model
    hit_u = _gaussian_log_density(unlearned, mean_u, var_u) > _gaussian_log_density(unlearned, mean_r_all, var_r_all)
    # retrained targets: held out of the retrained fit
    hit_r = _gaussian_log_density(retrained, mean_r, var_r) >= _gaussian_log_density(retrained, mean_u_all, var_u_all)
    per_example = 0.5 * (hit_u.double().mean(0) + hit_r.double().mean(0))
    return per_example.mean() if reduction == "mean" else per_example
