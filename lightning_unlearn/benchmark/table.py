"""The comparison in numbers and as a table: percentages, gaps to Retrain, one row of results and
the markdown table in the style of SalUn / l1-sparse.

Columns and titles come from :data:`lightning_unlearn.metrics.keys.GAP_METRICS`; gaps from
:func:`~lightning_unlearn.metrics.functional.metric_gaps` and
:func:`~lightning_unlearn.metrics.functional.avg_gap`, computed on the percentages as printed
(2 decimals) and rounded to 2 decimals again.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Optional

from lightning_unlearn import registry
from lightning_unlearn.benchmark.config import REFERENCE, MethodSpec
from lightning_unlearn.metrics.functional import avg_gap, metric_gaps
from lightning_unlearn.metrics.keys import GAP_METRICS, METRICS
from lightning_unlearn.report import json_safe


def percent(metrics: Mapping[str, float], keys: Optional[Iterable[str]] = None) -> dict[str, float]:
    """``metrics`` (fractions) in percent, rounded to 2 decimals: every key, or only ``keys`` (in
    their order)."""
    return {key: round(100.0 * float(metrics[key]), 2) for key in (metrics if keys is None else keys)}


def gaps(metrics: Mapping[str, float], reference: Mapping[str, float]) -> tuple[dict[str, float], float]:
    """``|metrics - reference|`` per metric of ``GAP_METRICS`` and their mean (Avg. Gap), both
    rounded to 2 decimals; inputs in percent, as :func:`percent` returns them."""
    per_metric = {key: round(abs(gap), 2) for key, gap in metric_gaps(metrics, reference).items()}
    return per_metric, round(avg_gap(metrics, reference), 2)


def table_row(name: str, spec: MethodSpec, metrics: Mapping[str, float], reference: Mapping[str, float],
              runtime_s: float) -> dict[str, Any]:
    """One row of compare's results.

    Args:
        name: the row name.
        spec: the row.
        metrics: the row's metrics after unlearning, fractions.
        reference: the Retrain row's metrics after training, fractions.
        runtime_s: the unlearning fit's wall time.

    Returns:
        The row name, the registry ``method``, the ``class``, ``max_epochs``, ``init_args``,
        ``callbacks``, the ``GAP_METRICS`` then the other ``METRICS`` (``forget_acc``) in percent,
        ``gap`` (per metric of ``GAP_METRICS``, points), ``avg_gap`` and ``runtime_s`` (3 decimals).
    """
    metrics, reference = percent(metrics), percent(reference)
    gap, average = gaps(metrics, reference)
    return {
        "name": name,
        "method": spec.method,
        "class": registry.get(spec.method).cls.__name__,
        "max_epochs": int(spec.max_epochs),
        "init_args": json_safe(spec.init_args),
        "callbacks": json_safe(spec.callbacks),
        **{key: metrics[key] for key in GAP_METRICS},
        **{key: metrics[key] for key in METRICS if key not in GAP_METRICS},  # forget_acc
        "gap": gap,
        "avg_gap": average,
        "runtime_s": round(float(runtime_s), 3),
    }


def format_table(result: Mapping[str, Any]) -> str:
    """The comparison as a markdown table in the style of SalUn / l1-sparse: each metric with its
    distance to Retrain in parentheses, then Avg. Gap and the run time (RTE, seconds). The original
    model's row comes first, for scale (it has no gap).

    Args:
        result: what :func:`~lightning_unlearn.benchmark.run_compare` returns (``original``,
            ``rows`` and ``forget`` are read).
    """
    header = ["Method", *GAP_METRICS.values(), "Avg. Gap", "RTE (s)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    original = result["original"]
    cells = ["original (before)"] + [f"{original[key]:.2f}" for key in GAP_METRICS] + ["-", f"{original['runtime_s']:.2f}"]
    lines.append("| " + " | ".join(cells) + " |")
    for row in result["rows"]:
        cells = [row["name"]]
        cells += [f"{row[key]:.2f} ({row['gap'][key]:.2f})" for key in GAP_METRICS]
        cells += [f"{row['avg_gap']:.2f}", f"{row['runtime_s']:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    forget = result["forget"]
    spec = ", ".join(f"{k}={v}" for k, v in forget["spec"].items() if v is not None)
    caption = (
        f"Forget {forget['count']} of {forget['count'] + forget['retain_count']} training examples ({spec});"
        f" metrics in %, (|gap| to {REFERENCE}); fingerprint {forget['fingerprint'][:12]}."
    )
    return caption + "\n\n" + "\n".join(lines)


def print_table(result: Mapping[str, Any], file: Any = None) -> None:
    """Prints :func:`format_table`: as a ``rich`` console table when ``rich`` is installed and the
    output is a terminal, else as markdown (pipes, files and tests get the markdown)."""
    import sys

    file = sys.stdout if file is None else file
    text = format_table(result)
    if not (hasattr(file, "isatty") and file.isatty()):
        print(text, file=file, flush=True)
        return
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        print(text, file=file, flush=True)
        return
    caption, _, body = text.partition("\n\n")
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in body.splitlines()]
    table = Table(title="lightning-unlearn compare", caption=caption)
    for i, title in enumerate(rows[0]):
        table.add_column(title, justify="left" if i == 0 else "right")
    for row in rows[2:]:
        table.add_row(*row)
    Console(file=file).print(table)
