"""Nothing silently unforgotten: the fit-end check that the forget set no longer looks like
training data to the unlearned model.

Pure Python over the metric dicts an evaluation pass returns (fractions; keys of
:data:`lightning_unlearn.metrics.keys.METRICS`), so it runs after any evaluation::

    finding = forgetting_check(before, after, classwise=True)
    if finding is not None:
        warnings.warn(finding.message)
        report["forgetting_check"] = finding.as_dict()
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Optional

from lightning_unlearn.validation import check_bool, check_float

__all__ = ["ForgettingFinding", "forgetting_check"]

REMEDY = (
    "The unlearning steps were too small for this model: raise the method's `lr` (3-10x) or its epochs, or let"
    " `lightning-unlearn tune --config <your compare config>` choose them on this model and request (no retrained"
    " model needed)."
)


@dataclass(frozen=True)
class ForgettingFinding:
    """What :func:`forgetting_check` found.

    Attributes:
        kind: ``"classwise"`` or ``"random"``: the rule that fired.
        figures: the numbers behind it (fractions): before/after forget and test accuracy, the
            share of the original's figure that is left (``kept``) and the limit it was held to.
        message: the warning text (figures and remedy).
        remedy: what to do.
    """

    kind: str
    figures: dict[str, float] = field(default_factory=dict)
    message: str = ""
    remedy: str = REMEDY

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form, for the unlearning report."""
        return asdict(self)


def forgetting_check(
    before: Mapping[str, float],
    after: Mapping[str, float],
    classwise: bool,
    *,
    keep_fraction: float = 0.5,
    min_margin: float = 0.02,
) -> Optional[ForgettingFinding]:
    """Is the forget set still classified like training data after unlearning?

    * Class-wise (``classwise=True``): a model that never saw the class (Retrain) classifies
      almost none of it correctly. Fires when the forget accuracy after unlearning is still at
      least ``keep_fraction`` of the original's: ``after.forget_acc >= keep_fraction *
      before.forget_acc`` (and the original recognised the class: ``before.forget_acc >=
      min_margin``).
    * Random (``classwise=False``): a model that never saw the examples treats them like held-out
      data, so the original's margin ``m0 = before.forget_acc - before.test_acc`` (training data
      are classified better than test data) should mostly vanish. Fires when at least
      ``keep_fraction`` of it is left: ``after.forget_acc - after.test_acc >= keep_fraction * m0``
      (checked only when ``m0 >= min_margin``: otherwise the original does not tell its
      training data from test data to begin with). When both dicts also carry mean true-class
      confidences (``forget_confidence``, ``test_confidence``), the confidence margin must be
      kept by the same share too for the check to fire.

    On Fashion-MNIST (SmallCNN, 10 % random): the original's accuracy margin is about 0.05 and
    Retrain keeps about a sixth of it; class-wise Retrain's forget accuracy is 0.

    Args:
        before: the original's metrics (``forget_acc``, ``test_acc``; fractions).
        after: the unlearned model's metrics.
        classwise: whether the request forgets whole classes.
        keep_fraction: the share of the original's figure that, if still left, means "not forgotten".
        min_margin: below this the original's figure is too small to judge (no finding).

    Returns:
        ``None`` when the forget set no longer looks like training data (or there is nothing to
        judge), else a :class:`ForgettingFinding` with the figures and the remedy.

    Raises:
        ValueError: a missing metric or an invalid ``keep_fraction``/``min_margin``.

    Example::

        >>> before = {"forget_acc": 1.0, "test_acc": 0.98}
        >>> forgetting_check(before, {"forget_acc": 0.97, "test_acc": 0.97}, classwise=True).kind
        'classwise'
        >>> forgetting_check(before, {"forget_acc": 0.0, "test_acc": 0.88}, classwise=True) is None
        True
    """
    classwise = check_bool(classwise, "classwise")
    keep_fraction = check_float(
        keep_fraction,
        "keep_fraction",
        minimum=0.0,
        maximum=1.0,
        open_minimum=True,
        hint="the share of the original's figure that still counts as not forgotten, e.g. 0.5",
    )
    min_margin = check_float(min_margin, "min_margin", minimum=0.0, hint="e.g. 0.02")
    for name, metrics in (("before", before), ("after", after)):
        missing = [key for key in ("forget_acc", "test_acc") if key not in metrics]
        if missing:
            raise ValueError(f"`{name}` lacks {missing}: pass the metric dicts of an evaluation pass (fractions).")
    b_f, b_t, a_f, a_t = (
        float(before["forget_acc"]),
        float(before["test_acc"]),
        float(after["forget_acc"]),
        float(after["test_acc"]),
    )
    figures = {
        "before_forget_acc": b_f,
        "before_test_acc": b_t,
        "after_forget_acc": a_f,
        "after_test_acc": a_t,
        "keep_fraction": keep_fraction,
    }
    if classwise:
        if b_f < min_margin:
            return None
        kept = a_f / b_f
        if kept < keep_fraction:
            return None
        figures["kept"] = kept
        message = (
            f"The forgotten class is still recognised: forget accuracy {a_f:.3f} after unlearning, {kept:.0%} of the"
            f" original's {b_f:.3f} (a model that never saw the class scores about 0; this check fires at"
            f" {keep_fraction:.0%} or more). {REMEDY}"
        )
        return ForgettingFinding("classwise", figures, message)
    margin_before, margin_after = b_f - b_t, a_f - a_t
    if margin_before < min_margin:
        return None
    kept = margin_after / margin_before
    figures.update(margin_before=margin_before, margin_after=margin_after, kept=kept)
    if kept < keep_fraction:
        return None
    confidence = ("forget_confidence", "test_confidence")
    detail = ""
    if all(key in before and key in after for key in confidence):
        c_before = float(before["forget_confidence"]) - float(before["test_confidence"])
        c_after = float(after["forget_confidence"]) - float(after["test_confidence"])
        figures.update(confidence_margin_before=c_before, confidence_margin_after=c_after)
        if c_before > 0 and c_after < keep_fraction * c_before:
            return None
        detail = f"; mean true-class confidence {c_after:+.3f} above the test set's (original {c_before:+.3f})"
    message = (
        f"The forget set is still classified like training data: its accuracy is {margin_after:+.3f} above the"
        f" held-out test set's ({a_f:.3f} vs {a_t:.3f}), {kept:.0%} of the original's margin {margin_before:+.3f}"
        f"{detail} (a model that never saw these examples keeps little of it; this check fires at"
        f" {keep_fraction:.0%} or more). {REMEDY}"
    )
    return ForgettingFinding("random", figures, message)
