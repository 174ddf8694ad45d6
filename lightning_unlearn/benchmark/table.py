"""The comparison in numbers and as a table: percentages, gaps to Retrain, one row of results and
the markdown table in the style of SalUn / l1-sparse.

Columns and titles come from :data:`lightning_unlearn.metrics.keys.GAP_METRICS`; gaps from
:func:`~lightning_unlearn.metrics.functional.metric_gaps` and
:func:`~lightning_unlearn.metrics.functional.avg_gap`, computed on the percentages as printed
(2 decimals) and rounded to 2 decimals again.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict
from typing import Any, Optional

from lightning_unlearn import registry
from lightning_unlearn.benchmark.config import DENSE, REFERENCE, MethodSpec
from lightning_unlearn.metrics.functional import avg_gap, metric_gaps
from lightning_unlearn.metrics.keys import BEST_ATTACK, BEST_AUC, GAP_METRICS, METRICS
from lightning_unlearn.report import json_safe


def percent(metrics: Mapping[str, Optional[float]], keys: Optional[Iterable[str]] = None) -> dict[str, float]:
    """``metrics`` (fractions) in percent, rounded to 2 decimals: every key, or only ``keys`` (in
    their order).

    Raises:
        ValueError: a metric is ``None`` (not finite: the model diverged).
    """
    out = {}
    for key in metrics if keys is None else keys:
        value = metrics[key]
        if value is None:
            raise ValueError(f"Metric {key!r} is None (not finite: the model diverged): it has no value in percent.")
        out[key] = round(100.0 * float(value), 2)
    return out


def gaps(metrics: Mapping[str, float], reference: Mapping[str, float]) -> tuple[dict[str, float], float]:
    """``|metrics - reference|`` per metric of ``GAP_METRICS`` and their mean (Avg. Gap), both
    rounded to 2 decimals; inputs in percent, as :func:`percent` returns them."""
    per_metric = {key: round(abs(gap), 2) for key, gap in metric_gaps(metrics, reference).items()}
    return per_metric, round(avg_gap(metrics, reference), 2)


def audit_columns(audit: Optional[Mapping[str, Any]], reference_audit: Optional[Mapping[str, Any]] = None) -> dict[str, Any]:
    """compare's audit columns of a row: ``mia_auc`` (the best threshold attack's forget-vs-test AUC,
    4 decimals; higher = remembered, 0.5 = D_f looks like unseen data), ``mia_auc_attack`` (which
    attack) and ``mia_auc_gap`` (``|AUC - Retrain's|``); empty without an audit."""
    if not audit or audit.get(BEST_AUC) is None:
        return {}
    auc = round(float(audit[BEST_AUC]), 4)
    out = {"mia_auc": auc, "mia_auc_attack": audit.get(BEST_ATTACK)}
    if reference_audit and reference_audit.get(BEST_AUC) is not None:
        out["mia_auc_gap"] = round(abs(auc - round(float(reference_audit[BEST_AUC]), 4)), 4)
    return out


def table_row(
    name: str,
    spec: MethodSpec,
    metrics: Mapping[str, Optional[float]],
    reference: Mapping[str, Optional[float]],
    runtime_s: float,
    audit: Optional[Mapping[str, Any]] = None,
    reference_audit: Optional[Mapping[str, Any]] = None,
) -> dict[str, Any]:
    """One row of compare's results.

    Args:
        name: the row name.
        spec: the row.
        metrics: the row's metrics after unlearning, fractions.
        reference: the Retrain row's metrics after training, fractions.
        runtime_s: the unlearning fit's wall time.
        audit: the row's audit quantities (``UnlearningEvaluation(audits=...).audit["after"]``), if any.
        reference_audit: Retrain's, for the gap of the audit columns.

    Returns:
        The row name, the registry ``method``, the ``class``, ``max_epochs``, ``init_args``,
        ``callbacks`` (and ``trainer`` when the row sets any), the ``GAP_METRICS`` then the other ``METRICS``
        (``forget_acc``) in percent, ``gap`` (per metric of ``GAP_METRICS``, points), ``avg_gap``,
        ``runtime_s`` (3 decimals) and, with an audit, :func:`audit_columns`.
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
        **({"trainer": json_safe(spec.trainer)} if spec.trainer else {}),
        **{key: metrics[key] for key in GAP_METRICS},
        **{key: metrics[key] for key in METRICS if key not in GAP_METRICS},  # forget_acc
        "gap": gap,
        "avg_gap": average,
        "runtime_s": round(float(runtime_s), 3),
        **audit_columns(audit, reference_audit),
    }


def format_table(result: Mapping[str, Any]) -> str:
    """The comparison as a markdown table in the style of SalUn / l1-sparse: each metric with its
    distance to Retrain in parentheses, then Avg. Gap, the audit columns when the rows have them
    (``MIA AUC``: the best threshold attack's forget-vs-test AUC, with its distance to Retrain's;
    ``KLoM D_f``: the mean KLoM of the forget set against Retrain oracles, for model populations)
    and the run time (RTE, seconds). The original model's row comes first, for scale (it has no gap).

    With per-row originals (``originals:`` in the config) every original's row comes first, each
    row names the Retrain row its gaps are measured to, and a second table gives the topology gap
    of the rows of sparse originals (:func:`topology_table`).

    Args:
        result: what :func:`~lightning_unlearn.benchmark.run_compare` returns (``original``,
            ``rows`` and ``forget`` are read; ``originals`` and ``topology`` when present).
    """
    per_row = any("reference" in row for row in result["rows"])
    with_auc = any("mia_auc" in row for row in result["rows"])
    with_klom = any(row.get("klom_forget") is not None for row in result["rows"])
    audit_titles = (["MIA AUC (best)"] if with_auc else []) + (["KLoM D_f"] if with_klom else [])
    header = ["Method", *GAP_METRICS.values(), "Avg. Gap", *audit_titles, *(["Reference"] if per_row else []), "RTE (s)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    befores = [("original (before)", result["original"])] if not per_row else []
    if per_row:
        uses_dense = any(row.get("original") == DENSE for row in result["rows"])
        befores = [(f"{DENSE} original (before)", result["original"])] if uses_dense else []
        befores += [(f"{name} original (before)", values) for name, values in (result.get("originals") or {}).items()]
    for label, original in befores:
        cells = [label] + [f"{original[key]:.2f}" for key in GAP_METRICS] + ["-"]
        cells += [f"{original['mia_auc']:.3f}" if original.get("mia_auc") is not None else "-"] if with_auc else []
        cells += ["-"] if with_klom else []
        cells += [*(["-"] if per_row else []), f"{original['runtime_s']:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    for row in result["rows"]:
        cells = [row["name"]]
        cells += [f"{row[key]:.2f} ({row['gap'][key]:.2f})" for key in GAP_METRICS]
        cells += [f"{row['avg_gap']:.2f}"]
        if with_auc:
            auc = row.get("mia_auc")
            cells.append(
                "-" if auc is None else f"{auc:.3f} ({row['mia_auc_gap']:.3f})" if "mia_auc_gap" in row else f"{auc:.3f}"
            )
        if with_klom:
            cells.append("-" if row.get("klom_forget") is None else f"{row['klom_forget']:.2f}")
        cells += [*([row["reference"]] if per_row else []), f"{row['runtime_s']:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    forget = result["forget"]
    spec = ", ".join(f"{k}={v}" for k, v in forget["spec"].items() if v is not None)
    to = "its reference (last column)" if per_row else REFERENCE
    caption = (
        f"Forget {forget['count']} of {forget['count'] + forget['retain_count']} training examples ({spec});"
        f" metrics in %, (|gap| to {to}); fingerprint {forget['fingerprint'][:12]}."
    )
    if with_auc:
        caption += " MIA AUC: the best threshold attack, forget vs test (0.5 = looks unseen; higher = remembered)."
    text = caption + "\n\n" + "\n".join(lines)
    if result.get("topology"):
        text += "\n\n" + topology_table(result)
    return text


def topology_table(result: Mapping[str, Any]) -> str:
    """The topology gap of the rows of sparse originals, in a markdown table: the density of the
    pruned layers, IoU(original, reference) ("before"), IoU(row, reference) ("after"), the noise
    floor IoU(reference, reference') and the gap closed, ``(after - before) / (floor - before)``
    (means over the reference and its noise-floor rows when there are any; "-" without them), and
    the wall time of the fit-start topology change (un-pruning), which RTE does not include."""
    header = ["Method", "Original", "Density", "IoU before", "IoU after", "Floor", "Gap closed", "Un-pruning (s)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---", "---"] + ["---:"] * (len(header) - 2)) + "|"]
    originals = {row["name"]: row.get("original", DENSE) for row in result["rows"]}
    for name, topo in result["topology"].items():
        before, after = topo.get("before", topo["iou_original"]), topo.get("after", topo["iou_unpruned"])
        floor = topo.get("floor")
        closed = topo.get("gap_closed")
        cells = [
            name,
            originals.get(name, "-"),
            f"{topo['density']:.3f}",
            f"{before:.4f}",
            f"{after:.4f}",
            "-" if floor is None else f"{floor:.4f}",
            "-" if closed is None or closed != closed else f"{closed:.2f}",
            f"{topo.get('topology_time_s', 0.0):.2f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return (
        "Topology of the pruned layers (IoU of the kept weights with the Retrain row's, its noise-floor rows included):\n\n"
        + "\n".join(lines)
    )


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
    body, _, rest = body.partition("\n\n")  # the topology table, when there is one, follows as text
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in body.splitlines()]
    table = Table(title="lightning-unlearn compare", caption=caption)
    for i, title in enumerate(rows[0]):
        table.add_column(title, justify="left" if i == 0 else "right")
    for row in rows[2:]:
        table.add_row(*row)
    Console(file=file).print(table)
    if rest:
        print(rest, file=file, flush=True)


def describe_run(
    cfg: Any,
    data: Mapping[str, Any],
    network: Any,
    original_spec: Any,
    specs: Mapping[str, MethodSpec],
    pipelines: Optional[Mapping[str, Any]] = None,
    references: Optional[Mapping[str, Optional[str]]] = None,
) -> dict[str, Any]:
    """A run's configuration as the results (and each W&B run's config) show it: seed, accelerator,
    precision, MIA backend, ``data`` as given, the network's class and size, the original's
    training, the sparse ``originals`` (``pipelines``) and every row (its ``trainer`` settings when
    it sets any; its original, reference and data order when there are sparse originals)."""
    return {
        "seed": int(cfg.seed),
        "accelerator": cfg.accelerator,
        "precision": cfg.get("precision"),
        "mia_backend": cfg.mia_backend,
        "data": dict(data),
        "model": {"class": type(network).__name__, "parameters": sum(p.numel() for p in network.parameters())},
        "original": asdict(original_spec),
        **({"originals": {name: asdict(p) for name, p in pipelines.items()}} if pipelines else {}),
        "methods": {
            name: {
                "method": s.method,
                "max_epochs": int(s.max_epochs),
                "init_args": json_safe(s.init_args),
                "callbacks": json_safe(s.callbacks),
                **({"trainer": json_safe(s.trainer)} if s.trainer else {}),
                **(
                    {"original": s.original, "reference": references[name], "shuffle_seed": s.shuffle_seed}
                    if pipelines and references is not None
                    else {}
                ),
            }
            for name, s in specs.items()
        },
    }
