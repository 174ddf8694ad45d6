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
