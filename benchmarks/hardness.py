"""Hardness of a request (HAMU's kappa, measured before unlearning) vs the gap to Retrain of the
usual methods, one class-wise request per class.

    python -m benchmarks.hardness --config benchmarks/configs/fmnist_hardness_cpu.yaml \
        --out results/hardness_fmnist.json --plot results/hardness_fmnist.png [--classes 0 1 2]

The original is trained once (whole training set). For each request (all training images of one
class): :func:`lightning_unlearn.functional.request_hardness` on the original (``kappa`` of the
mean gradients, per-example ``kappa_i`` summarised; 8 random retain batches), then Retrain and
every row of the config with :func:`lightning_unlearn.benchmark.run_row` against that Retrain.
Printed: per request the hardness and each row's Avg. Gap; per row the Spearman rank correlation
between hardness and Avg. Gap over the requests.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from typing import Any, Optional

import torch
import yaml

from benchmarks.common import emit
from lightning_unlearn.benchmark import (
    REFERENCE,
    OriginalSpec,
    check_methods,
    parse_config,
    quiet_fit_warnings,
    run_row,
    table_row,
    train_original,
    trainer_options,
)
from lightning_unlearn.data import ForgetSpec
from lightning_unlearn.functional.hardness import request_hardness


def _retain_sample(datamodule, count: int, seed: int) -> list:
    generator = torch.Generator().manual_seed(seed)
    retain = datamodule.split("retain", eval_transforms=True)
    order = torch.randperm(len(retain), generator=generator)[: count * datamodule.eval_batch_size].tolist()
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(retain, order), batch_size=datamodule.eval_batch_size)
    return list(loader)


def spearman(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Spearman rank correlation (average ranks for ties)."""

    def ranks(values):
        order = sorted(range(len(values)), key=lambda i: values[i])
        out = [0.0] * len(values)
        i = 0
        while i < len(order):
            j = i
            while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
                j += 1
            for k in range(i, j + 1):
                out[order[k]] = (i + j) / 2.0
            i = j + 1
        return out

    rx, ry = ranks(list(xs)), ranks(list(ys))
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    num = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    den = (sum((a - mx) ** 2 for a in rx) * sum((b - my) ** 2 for b in ry)) ** 0.5
    return num / den if den else float("nan")


def run(config: Any, classes: Optional[Sequence[int]] = None, retain_sample: int = 8) -> tuple[dict, str]:
    if not isinstance(config, Mapping):
        config = yaml.safe_load(open(config))
    specs = check_methods(parse_config(config, instantiate=False).methods)
    cfg = parse_config(config)
    base, network, seed = cfg.data, cfg.model, int(cfg.seed)
    options = trainer_options(cfg)
    original_spec = OriginalSpec(**{k: v for k, v in dict(config["original"]).items()})
    reference_name = next(name for name, spec in specs.items() if spec.method == REFERENCE)
    base.setup("fit")
    classes = list(range(base.num_classes)) if classes is None else list(classes)
    requests = []
    with quiet_fit_warnings():
        original, _ = train_original(network, base, original_spec, seed, **options)
        for c in classes:
            data = base.with_requests([ForgetSpec(classes=[c])], 0)
            summary, per_example = request_hardness(original, data.forget_dataloader(), _retain_sample(data, retain_sample, seed))
            reference = run_row(specs[reference_name], original, data, seed, mia_backend=cfg.mia_backend, **options)
            rows = {}
            for name, spec in specs.items():
                run_ = (
                    reference
                    if name == reference_name
                    else run_row(spec, original, data, seed, reference=reference.model, mia_backend=cfg.mia_backend, **options)
                )
                rows[name] = table_row(name, spec, run_.after, reference.after, run_.runtime_s)
            requests.append(
                {
                    "classes": [c],
                    "forget_count": len(data.forget_indices),
                    "hardness": summary.as_dict(),
                    "per_example_hardness": [round(float(v), 5) for v in per_example],
                    "rows": rows,
                }
            )
    hardness = [r["hardness"]["kappa"] for r in requests]
    correlation = {
        name: spearman(hardness, [r["rows"][name]["avg_gap"] for r in requests]) for name in specs if name != reference_name
    }
    result = {
        "requests": requests,
        "spearman_kappa_vs_avg_gap": correlation,
        "config": {
            "data": type(base).__name__,
            "original": dict(config["original"]),
            "methods": {n: {"method": s.method, "max_epochs": s.max_epochs, "init_args": s.init_args} for n, s in specs.items()},
        },
    }
    return result, format_table(result, reference_name)


def format_table(result: Mapping[str, Any], reference_name: str = REFERENCE) -> str:
    names = [n for n in result["requests"][0]["rows"] if n != reference_name]
    header = ["class", "kappa", "kappa_i mean", "kappa_i > 0 (%)"] + [f"{n} gap" for n in names]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---:"] * len(header)) + "|"]
    for r in sorted(result["requests"], key=lambda r: r["hardness"]["kappa"]):
        h = r["hardness"]
        cells = [str(r["classes"][0]), f"{h['kappa']:.3f}", f"{h['per_example_mean']:.3f}", f"{100 * h['fraction_positive']:.1f}"]
        cells += [f"{r['rows'][n]['avg_gap']:.2f}" for n in names]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append(
        "| Spearman (kappa, gap) | | | | " + " | ".join(f"{result['spearman_kappa_vs_avg_gap'][n]:+.2f}" for n in names) + " |"
    )
    return "\n".join(lines)


def plot(result: Mapping[str, Any], path: str, reference_name: str = REFERENCE) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n in result["requests"][0]["rows"] if n != reference_name]
    fig, ax = plt.subplots(figsize=(6.5, 4))
    kappa = [r["hardness"]["kappa"] for r in result["requests"]]
    for name in names:
        ax.plot(
            kappa,
            [r["rows"][name]["avg_gap"] for r in result["requests"]],
            "o",
            label=f"{name} (Spearman {result['spearman_kappa_vs_avg_gap'][name]:+.2f})",
        )
    for r, k in zip(result["requests"], kappa):
        ax.annotate(str(r["classes"][0]), (k, 0), textcoords="offset points", xytext=(0, -12), ha="center", fontsize=7)
    ax.set_xlabel("hardness kappa = cos(g_r, g_f) before unlearning (class-wise request)")
    ax.set_ylabel("Avg. Gap to Retrain (points)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", default="benchmarks/configs/fmnist_hardness_cpu.yaml")
    parser.add_argument("--classes", type=int, nargs="+", default=None)
    parser.add_argument("--out", default=None)
    parser.add_argument("--plot", default=None)
    args = parser.parse_args()
    result, table = run(args.config, args.classes)
    emit("hardness", result, table, args.out)
    if args.plot:
        plot(result, args.plot)


if __name__ == "__main__":
    main()
