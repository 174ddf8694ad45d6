"""The fit-end "still not forgotten" check: each rule against hand-picked figures, the boundaries,
the optional confidence margin, the message and bad input."""

import json

import pytest

from lightning_unlearn.metrics.forgetting_check import REMEDY, forgetting_check

ORIGINAL = {"forget_acc": 0.96, "test_acc": 0.90, "retain_acc": 0.96}


def test_classwise_fires_while_the_class_is_still_recognised():
    finding = forgetting_check({"forget_acc": 1.0, "test_acc": 0.98}, {"forget_acc": 1.0, "test_acc": 0.98}, True)
    assert finding.kind == "classwise" and finding.figures["kept"] == 1.0
    assert "forget accuracy 1.000" in finding.message and "100% of the original's 1.000" in finding.message
    assert finding.message.endswith(REMEDY) and "lightning-unlearn tune" in finding.remedy
    json.dumps(finding.as_dict())  # report-ready
    assert forgetting_check({"forget_acc": 1.0, "test_acc": 0.98}, {"forget_acc": 0.5, "test_acc": 0.9}, True).kind == "classwise"
    assert forgetting_check({"forget_acc": 1.0, "test_acc": 0.98}, {"forget_acc": 0.49, "test_acc": 0.9}, True) is None
    assert forgetting_check({"forget_acc": 0.0, "test_acc": 0.98}, {"forget_acc": 0.0, "test_acc": 0.9}, True) is None


def test_random_fires_while_the_original_margin_is_kept():
    margin = 0.96 - 0.90
    kept = {"forget_acc": 0.90 + 0.6 * margin, "test_acc": 0.90}
    finding = forgetting_check(ORIGINAL, kept, False)
    assert finding.kind == "random"
    assert finding.figures["kept"] == pytest.approx(0.6) and finding.figures["margin_before"] == pytest.approx(margin)
    assert "+0.036 above the held-out test set's" in finding.message and "60% of the original's margin +0.060" in finding.message
    retrained = {"forget_acc": 0.90 + 0.15 * margin, "test_acc": 0.89}  # Retrain keeps about a sixth
    assert forgetting_check(ORIGINAL, retrained, False) is None
    no_margin = {"forget_acc": 0.91, "test_acc": 0.90}  # the original does not tell them apart
    assert forgetting_check(no_margin, no_margin, False) is None


def test_random_with_confidences_needs_both_margins_kept():
    before = {**ORIGINAL, "forget_confidence": 0.95, "test_confidence": 0.85}
    kept = {"forget_acc": 0.95, "test_acc": 0.90}
    assert forgetting_check(before, {**kept, "forget_confidence": 0.94, "test_confidence": 0.85}, False).kind == "random"
    assert forgetting_check(before, {**kept, "forget_confidence": 0.86, "test_confidence": 0.85}, False) is None


def test_keep_fraction_moves_the_threshold():
    after = {"forget_acc": 0.7, "test_acc": 0.9}
    before = {"forget_acc": 1.0, "test_acc": 0.98}
    assert forgetting_check(before, after, True, keep_fraction=0.8) is None
    assert forgetting_check(before, after, True, keep_fraction=0.6).figures["keep_fraction"] == 0.6


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(before={"forget_acc": 1.0}), "`before` lacks \\['test_acc'\\]"),
        (dict(keep_fraction=0.0), "`keep_fraction` must be a finite number > 0"),
        (dict(keep_fraction=1.5), "`keep_fraction` must be a finite number > 0 and <= 1"),
        (dict(classwise="yes"), "`classwise` must be"),
    ],
)
def test_bad_input(kwargs, match):
    args = {"before": ORIGINAL, "after": ORIGINAL, "classwise": False, **kwargs}
    with pytest.raises(ValueError, match=match):
        forgetting_check(args.pop("before"), args.pop("after"), args.pop("classwise"), **args)
