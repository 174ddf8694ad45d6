"""The ``audit`` section of the report: every audit quantity beside the Retrain reference, and
a verdict on each against the noise floor.

The noise floor of a quantity is how far a model that *is* a perfect unlearner lands from the
Retrain reference by chance:

* **reseeded Retrain** — ``|q(Retrain from other seeds) - q(Retrain)|``, when a reseeded Retrain
  was measured (``UnlearningEvaluation(reseeded_reference=...)``, or a population's
  ``retrain_reseeded`` row); it includes the randomness of training;
* **sampling** — twice the standard error of the difference, from the sizes of D_f, D_r and D_t
  (binomial for rates, Hanley-McNeil for AUCs), for the quantities that have one; it includes
  only the finiteness of the data.

The floor is the larger of those available. A quantity whose difference to Retrain exceeds it
is flagged ``out of line``; without a floor it is listed with ``no noise floor``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Optional

from lightning_unlearn.metrics.keys import MEANING_TEXT, METRICS, higher_means

__all__ = ["audit_summary", "sampling_floor", "summary_lines"]

#: The order of the summary's groups (a sparse model's summary leads with topology and per-example numbers).
_ORDER = ("metrics", "population/", "per_example/", "mia/", "representation/", "relearn/", "quantization/")
_SPARSE_ORDER = ("topology/", "population/", "per_example/", "metrics", "mia/", "representation/", "relearn/", "quantization/")


def _binomial_se(p: float, n: int) -> float:
    p = min(max(p, 0.0), 1.0)
    return math.sqrt(max(p * (1 - p), 0.25 / max(n, 1)) / max(n, 1))  # at least the SE of one example in n


def _auc_se(a: float, n1: int, n2: int) -> float:
    """Hanley & McNeil (1982) standard error of an AUC from n1 positives and n2 negatives."""
    a = min(max(a, 1e-6), 1 - 1e-6)
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    var = (a * (1 - a) + (n1 - 1) * (q1 - a * a) + (n2 - 1) * (q2 - a * a)) / (n1 * n2)
    return math.sqrt(max(var, 0.0))


def _sampling_se(quantity: str, value: float, counts: Mapping[str, int]) -> Optional[float]:
    f, r, t = counts.get("forget"), counts.get("retain"), counts.get("test")
    if not f or not t:
        return None
    if quantity.endswith("/auc"):
        members = r if "retain_vs_test" in quantity else f
        return _auc_se(value, members or f, t) if not quantity.startswith("quantization/") else None
    if quantity in ("forget_acc", "unlearning_accuracy", "mia_efficacy") or quantity == "mia/entropy_lr/member_rate":
        return _binomial_se(value, f)
    if quantity == "retain_acc":
        return _binomial_se(value, r or f)
    if quantity == "test_acc":
        return _binomial_se(value, t)
    if "/tpr_at_fpr_" in quantity:
        return _binomial_se(value, (r or f) if "retain_vs_test" in quantity else f)
    if quantity == "mia/loss_cv/accuracy":
        return _binomial_se(value, 2 * min(f, t))
    if quantity.startswith("representation/") and quantity.endswith("/forget_acc"):
        return _binomial_se(value, f)
    if quantity.startswith("representation/") and quantity.endswith("/test_acc"):
        return _binomial_se(value, max(t // 2, 1))
    if quantity in ("relearn/forget_acc", "relearn/forget_acc_before"):
        return _binomial_se(value, f)
    if quantity.startswith("quantization/") and quantity.endswith("/forget_acc"):
        return _binomial_se(value, f)
    if quantity.startswith("quantization/") and (quantity.endswith("_change") or quantity.endswith("_drop")):
        return 1.0 / f  # a paired change on D_f: one example's worth (2 s.e. = two examples)
    return None


def _fpr_of(quantity: str) -> Optional[float]:
    """The false-positive rate of a ``.../tpr_at_fpr_<tag>`` quantity (``1pct`` -> 0.01)."""
    if "/tpr_at_fpr_" not in quantity:
        return None
    tag = quantity.rsplit("/tpr_at_fpr_", 1)[1].removesuffix("pct").replace("p", ".")
    try:
        return float(tag) / 100.0
    except ValueError:
        return None


def sampling_floor(quantity: str, value: float, reference: float, counts: Mapping[str, int]) -> Optional[float]:
    """Twice the standard error of ``value - reference`` from the split sizes ``counts``
    (``{"forget", "retain", "test"}``), or ``None`` for a quantity without a formula.

    Example:
        >>> round(sampling_floor("forget_acc", 0.9, 0.9, {"forget": 100, "retain": 900, "test": 300}), 4)
        0.0849
    """
    a, b = _sampling_se(quantity, value, counts), _sampling_se(quantity, reference, counts)
    if a is None or b is None:
        return None
    return 2.0 * math.sqrt(a * a + b * b)


def _reading(meaning: str, difference: float) -> str:
    up = difference > 0
    return {
        "remembered": "remembers more than Retrain" if up else "forgets more than Retrain (overshoot: itself a signal)",
        "forgotten": "forgets more than Retrain (overshoot: itself a signal)" if up else "remembers more than Retrain",
        "utility": "better utility than Retrain" if up else "worse utility than Retrain",
        "unlike_retrain": "further from Retrain than chance" if up else "closer to Retrain than chance",
        "like_retrain": "closer to Retrain than chance" if up else "further from Retrain than chance",
        "unchanged": "moved less from the original than Retrain did (features kept)"
        if up
        else "moved more from the original than Retrain did",
        "sparser": "sparser than Retrain" if up else "denser than Retrain",
    }[meaning]


def _group(quantity: str) -> str:
    if quantity in METRICS:
        return "metrics"
    return next((g for g in _SPARSE_ORDER if g != "metrics" and quantity.startswith(g)), "other")


def _numbers(block: Optional[Mapping[str, Any]]) -> dict[str, float]:
    return {
        k: float(v)
        for k, v in (block or {}).items()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))
    }


def audit_summary(
    after: Mapping[str, Any],
    reference: Optional[Mapping[str, Any]] = None,
    reseeded: Optional[Mapping[str, Any]] = None,
    counts: Optional[Mapping[str, int]] = None,
    *,
    sparse: bool = False,
    floors: Optional[Mapping[str, float]] = None,
) -> list[dict[str, Any]]:
    """The verdict: one entry per measured quantity of ``after``, beside ``reference``.

    Args:
        after: the unlearned model's numbers (the evaluation metrics and flat audit quantities;
            ``topology/*`` for sparse models). Non-numbers are skipped.
        reference: the retrained model's numbers for the same quantities (``None``: no verdicts).
        reseeded: a reseeded Retrain's numbers (noise floor), when measured.
        counts: ``{"forget", "retain", "test"}`` sizes (sampling floors).
        sparse: lead with topology and per-example numbers (the un-pruning paper: population
            MIAs are unreliable on sparse models).
        floors: further noise floors by quantity (e.g. twice the standard error of a population
            mean over its models), labelled ``"models' spread (2 s.e.)"``.

    Returns:
        Entries ``{"quantity", "meaning", "value", "reference", "difference", "noise_floor",
        "floor_from", "verdict"}`` in summary order; ``verdict`` is ``"in line"``,
        ``"out of line: <reading>"``, ``"no reference"`` or ``"no noise floor"`` (then
        ``reading`` says which way it differs).
    """
    values, ref, seeded = _numbers(after), _numbers(reference), _numbers(reseeded)
    extra = dict(floors or {})
    order = _SPARSE_ORDER if sparse else _ORDER
    rank = {g: i for i, g in enumerate(order)}
    keys = sorted(values, key=lambda q: (rank.get(_group(q), len(order)), list(values).index(q)))
    entries = []
    for quantity in keys:
        try:
            meaning = higher_means(quantity)
        except KeyError:
            continue
        value = values[quantity]
        entry: dict[str, Any] = {
            "quantity": quantity,
            "meaning": MEANING_TEXT[meaning],
            "value": value,
            "reference": ref.get(quantity),
            "difference": None,
            "noise_floor": None,
            "floor_from": None,
            "verdict": "no reference",
        }
        fpr = _fpr_of(quantity)
        if fpr is not None and counts and counts.get("test") and fpr * counts["test"] < 10:
            entry["difference"] = value - ref[quantity] if quantity in ref else None
            entry["verdict"] = (
                f"not judged: at FPR {fpr:g} the threshold rests on {fpr * counts['test']:.1f} test examples (< 10)"
            )
        elif quantity in ref:
            difference = value - ref[quantity]
            found: dict[str, float] = {}
            if quantity in seeded:
                found["reseeded Retrain"] = abs(seeded[quantity] - ref[quantity])
            sampled = sampling_floor(quantity, value, ref[quantity], counts or {}) if counts else None
            if sampled is not None:
                found["sampling (2 s.e.)"] = sampled
            if extra.get(quantity) is not None:
                found["models' spread (2 s.e.)"] = float(extra[quantity])
            entry["difference"] = difference
            if found:
                source = max(found, key=found.__getitem__)
                entry.update(noise_floor=found[source], floor_from=source)
                entry["verdict"] = (
                    "in line" if abs(difference) <= found[source] else f"out of line: {_reading(meaning, difference)}"
                )
            else:
                entry["verdict"] = "no noise floor" + (f" ({_reading(meaning, difference)})" if difference else "")
        entries.append(entry)
    return entries


def summary_lines(summary: list[dict[str, Any]], limit: Optional[int] = None) -> list[str]:
    """The summary as aligned text lines (the printed verdict)."""

    def cell(value: Any) -> str:
        return f"{value:>10.4f}" if isinstance(value, (int, float)) else f"{'-':>10}"

    lines = [f"{'quantity':<48}{'value':>10}{'Retrain':>10}{'diff':>10}{'floor':>10}  verdict"]
    for entry in summary[:limit]:
        lines.append(
            f"{entry['quantity']:<48}{cell(entry['value'])}{cell(entry['reference'])}"
            f"{cell(entry['difference'])}{cell(entry['noise_floor'])}  {entry['verdict']}"
        )
    return lines
