"""Distance of an unlearned model's metrics from a reference (usually the retrained model).

SalUn's "Avg. Gap" is the mean absolute difference to Retrain over UA, RA, TA and MIA-Efficacy, in
percentage points. These functions work in whatever units the mappings hold (fractions in this
package: multiply by 100 to compare with the papers).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Union

from torch import Tensor

from lightning_unlearn.metrics.keys import GAP_METRICS

Number = Union[float, int, Tensor]


def _lookup(mapping: Mapping[str, Number], key: str, name: str) -> float:
    if key not in mapping:
        raise KeyError(
            f"key {key!r} is missing from `{name}` (it has {sorted(mapping)}); add it or pass `keys=` "
            "with the metrics both mappings share."
        )
    return float(mapping[key])


def metric_gaps(
    metrics: Mapping[str, Number],
    reference: Mapping[str, Number],
    keys: Sequence[str] = tuple(GAP_METRICS),
) -> dict[str, float]:
    """Signed differences ``metrics[k] - reference[k]`` for each key.

    Args:
        metrics: metric values of the model under test (floats or 0-d tensors).
        reference: metric values of the reference model, e.g. retrained from scratch on ``D_r``.
        keys: which metrics to compare.

    Returns:
        ``{key: metrics[key] - reference[key]}`` in the order of ``keys``.

    Raises:
        KeyError: if a key is missing from either mapping (the message names it).
        ValueError: if ``keys`` is empty or a single string.

    Example:
        >>> metric_gaps({"a": 0.5, "b": 0.25}, {"a": 0.75, "b": 0.25}, keys=("a", "b"))
        {'a': -0.25, 'b': 0.0}
    """
    if isinstance(keys, str):
        raise ValueError(f"`keys` must be a sequence of metric names, got the string {keys!r}; use ({keys!r},).")
    if len(keys) == 0:
        raise ValueError("`keys` is empty; pass at least one metric name.")
    return {k: _lookup(metrics, k, "metrics") - _lookup(reference, k, "reference") for k in keys}


def avg_gap(
    metrics: Mapping[str, Number],
    reference: Mapping[str, Number],
    keys: Sequence[str] = tuple(GAP_METRICS),
) -> float:
    """SalUn's "Avg. Gap": mean over ``keys`` of ``|metrics[k] - reference[k]|`` (lower is better).

    Args:
        metrics: metric values of the model under test (floats or 0-d tensors).
        reference: metric values of the reference model (Retrain).
        keys: which metrics to average; default UA, RA, TA and MIA-Efficacy.

    Returns:
        The mean absolute gap, in the units of the inputs.

    Raises:
        KeyError: if a key is missing from either mapping (the message names it).
        ValueError: if ``keys`` is empty or a single string.

    Example:
        >>> ours = {"unlearning_accuracy": 0.05, "retain_acc": 0.99, "test_acc": 0.93, "mia_efficacy": 0.10}
        >>> retrain = {"unlearning_accuracy": 0.07, "retain_acc": 1.00, "test_acc": 0.94, "mia_efficacy": 0.15}
        >>> round(avg_gap(ours, retrain), 4)
        0.0225
    """
    gaps = metric_gaps(metrics, reference, keys)
    return sum(abs(v) for v in gaps.values()) / len(gaps)
