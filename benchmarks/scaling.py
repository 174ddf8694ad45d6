"""How unlearning time grows with the forget-set size and the model size, against Retrain.

    python -m benchmarks.scaling [--fractions 0.01 0.1 0.3 0.5] [--models small_cnn resnet18] \
        [--train-size 10000] [--out results/scaling.json] [--plot results/scaling.png]

For each model and forget fraction (random forgetting): wall time of the unlearning fit (evaluation
excluded) for Retrain and a few methods, with their epochs fixed, so the numbers show how cost
follows |D_f| (gradient ascent, SSD's forget pass), |D_r| (fine-tune, Retrain) or both.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import lightning as L

from benchmarks.common import QUIET, accelerator, datamodule, emit, seed
from lightning_unlearn.data import ForgetSpec
from lightning_unlearn.methods import SSD, FineTune, GradientAscent, RandomLabel, Retrain
from lightning_unlearn.models import ResNet18, SmallCNN

MODELS = {
    "small_cnn": lambda: SmallCNN(1, 10, width=16, pool_size=4),
    "resnet18": lambda: ResNet18(in_channels=1, num_classes=10, width=8),
}
#: name -> (class, epochs, init args)
METHODS = {
    "retrain": (Retrain, 5, {"lr": 0.05}),
    "finetune": (FineTune, 1, {}),
    "gradient_ascent": (GradientAscent, 1, {}),
    "random_label": (RandomLabel, 1, {"epoch_split": "forget"}),
    "ssd": (SSD, 1, {"alpha": 1.5}),
}


def timed_fit(module: L.LightningModule, dm: Any, epochs: int) -> float:
    trainer = L.Trainer(**QUIET, max_epochs=epochs, accelerator=accelerator(), devices=1)
    start = time.perf_counter()
    trainer.fit(module, datamodule=dm)
    return time.perf_counter() - start


def run(fractions: list[float], models: list[str], train_size: int, data: str) -> tuple[dict, str]:
    rows = []
    for model_name in models:
        for fraction in fractions:
            seed(0)
            dm = datamodule(data, ForgetSpec(ratio=fraction, seed=0), train_size, 1000, batch_size=128)
            dm.setup("fit")
            network = MODELS[model_name]()
            for name, (cls, epochs, kwargs) in METHODS.items():
                seconds = timed_fit(cls(network, **kwargs), dm, epochs)
                rows.append(
                    dict(
                        model=model_name,
                        fraction=fraction,
                        method=name,
                        epochs=epochs,
                        seconds=seconds,
                        forget=len(dm.forget_indices),
                        retain=len(dm.retain_indices),
                    )
                )
    methods = list(METHODS)
    table = "| model | forget | " + " | ".join(f"{m} (s)" for m in methods) + " |\n|" + "---|" * (2 + len(methods)) + "\n"
    for model_name in models:
        for fraction in fractions:
            cells = [
                next(r for r in rows if r["model"] == model_name and r["fraction"] == fraction and r["method"] == m)
                for m in methods
            ]
            table += f"| {model_name} | {fraction:.0%} | " + " | ".join(f"{c['seconds']:.2f}" for c in cells) + " |\n"
    return {"rows": rows, "epochs": {m: e for m, (_, e, _) in METHODS.items()}, "train_size": train_size}, table


def plot(result: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = sorted({r["model"] for r in result["rows"]})
    fig, axes = plt.subplots(1, len(models), figsize=(5 * len(models), 3.6), squeeze=False)
    for ax, model_name in zip(axes[0], models):
        for method in result["epochs"]:
            pts = sorted(
                (r["fraction"], r["seconds"]) for r in result["rows"] if r["model"] == model_name and r["method"] == method
            )
            ax.plot([100 * f for f, _ in pts], [s for _, s in pts], marker="o", label=f"{method} ({result['epochs'][method]} ep)")
        ax.set_title(model_name)
        ax.set_xlabel("forget set (% of training set)")
        ax.set_ylabel("wall time (s)")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.01, 0.1, 0.3, 0.5])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--train-size", type=int, default=10000)
    parser.add_argument("--data", default="fashion-mnist", choices=["fashion-mnist", "digits"])
    parser.add_argument("--out", default=None)
    parser.add_argument("--plot", default=None)
    args = parser.parse_args()
    result, table = run(args.fractions, args.models, args.train_size, args.data)
    emit("scaling", result, table, args.out)
    if args.plot:
        plot(result, args.plot)


if __name__ == "__main__":
    main()
