"""The metric keys of the whole package: what an evaluation pass returns, what Avg. Gap averages,
and how the tables title them. Every module reads them from here."""

from __future__ import annotations

#: Every number an evaluation pass returns, as fractions in [0, 1].
METRICS: tuple[str, ...] = ("forget_acc", "retain_acc", "test_acc", "unlearning_accuracy", "mia_efficacy")
#: The OPTML table columns (SalUn, l1-sparse) in table order, with their titles; Avg. Gap averages them.
GAP_METRICS: dict[str, str] = {
    "unlearning_accuracy": "UA",
    "retain_acc": "RA",
    "test_acc": "TA",
    "mia_efficacy": "MIA-Efficacy",
}

# --------------------------------------------------------------------------------------- audits
#: The audits ``UnlearningEvaluation(audits=...)`` can switch on:
#: ``attacks`` (threshold, entropy and loss membership attacks, from the evaluation pass itself),
#: ``margins`` (per-example margins kept, compared with the reference's; saved by populations),
#: ``representation`` (CKA, linear probe, k-NN on penultimate features), ``relearn`` (the
#: relearning attack), ``quantization`` (int8 / int4 weights), ``plots`` (PNG figures).
AUDITS: tuple[str, ...] = ("attacks", "margins", "representation", "relearn", "quantization", "plots")
#: Named sets of audits.
AUDIT_PRESETS: dict[str, tuple[str, ...]] = {
    "standard": ("attacks", "margins"),
    "full": AUDITS,
}
#: What a higher value of an audit quantity means, by the start of its name (longest match wins).
#: Every logged audit key ends with ``_higher_<meaning>``.
HIGHER_MEANS: dict[str, str] = {
    "forget_acc": "remembered",
    "retain_acc": "utility",
    "test_acc": "utility",
    "unlearning_accuracy": "forgotten",
    "mia_efficacy": "forgotten",
    "mia/": "remembered",
    "per_example/margin_gap": "unlike_retrain",
    "population/klom": "unlike_retrain",
    "population/challenge_score": "forgotten",
    "population/epsilon": "remembered",
    "population/ulira_accuracy": "remembered",
    "representation/cka_retrain": "like_retrain",
    "representation/cka_original": "unchanged",
    "representation/": "remembered",
    "relearn/": "remembered",
    "quantization/": "remembered",
    "topology/": "like_retrain",
    "topology/sparsity": "sparser",
    "topology/iou_before_after": "unchanged",
}
#: How each meaning reads in a summary.
MEANING_TEXT: dict[str, str] = {
    "remembered": "higher = remembered (the forget set is recognised / recovered)",
    "forgotten": "higher = forgotten",
    "utility": "higher = better utility",
    "unlike_retrain": "higher = further from Retrain (0 = like Retrain)",
    "like_retrain": "higher = closer to Retrain (1 = same representation)",
    "unchanged": "higher = moved less from the original",
    "sparser": "higher = sparser",
}


def higher_means(quantity: str) -> str:
    """What a higher value of the audit ``quantity`` means (a key of :data:`MEANING_TEXT`).

    Example:
        >>> higher_means("mia/loss/forget_vs_test/auc"), higher_means("representation/cka_retrain/forget")
        ('remembered', 'like_retrain')
    """
    matches = [prefix for prefix in HIGHER_MEANS if quantity == prefix or quantity.startswith(prefix)]
    if not matches:
        raise KeyError(f"unknown audit quantity {quantity!r}: add its meaning to HIGHER_MEANS.")
    return HIGHER_MEANS[max(matches, key=len)]


def audit_log_key(prefix: str, quantity: str) -> str:
    """The logged name of an audit quantity: ``{prefix}/audit/{quantity}_higher_{meaning}``.

    Example:
        >>> audit_log_key("unlearn", "mia/loss/forget_vs_test/auc")
        'unlearn/audit/mia/loss/forget_vs_test/auc_higher_remembered'
    """
    return f"{prefix}/audit/{quantity}_higher_{higher_means(quantity)}"


def fpr_tag(rate: float) -> str:
    """A false-positive rate as a key fragment: 0.01 -> ``1pct``, 0.001 -> ``0p1pct``."""
    text = f"{100 * rate:.6g}".replace(".", "p")
    return f"{text}pct"


#: The best threshold attack's forget-vs-test AUC (compare's audit column), and the attack it was.
BEST_AUC: str = "mia/best_threshold/forget_vs_test/auc"
BEST_ATTACK: str = "mia/best_threshold/forget_vs_test/attack"
#: The population audits' quantities (model populations, :mod:`lightning_unlearn.benchmark.population`).
KLOM_MEAN: str = "population/klom/{split}_mean"
CHALLENGE_SCORE: str = "population/challenge_score"
EPSILON_MEAN: str = "population/epsilon_mean"
ULIRA_ACCURACY: str = "population/ulira_accuracy"
