"""Evaluation cost: one `UnlearningEvaluation` pass (without and with the population audits) vs
one training epoch, measured in one run.

    python -m benchmarks.evaluation_speed [--train-size 10000] [--test-size 2000] [--repeats 3] [--out results/evaluation_speed.json]

The pass is the call the callback makes on the unlearned model at fit end (and on the original
at fit start): `lightning_unlearn.evaluation.evaluate` on the datamodule, i.e. one no-grad
forward over D_f, D_r and D_t (forget/retain/test accuracies) and the native MIA-efficacy SVC.
The epoch is one `ImageClassifier` epoch over the whole training set through Lightning, timed
from epoch start to epoch end. Same SmallCNN (width 16, 4x4 head), same data (10 % random
forget set); training batch 256, evaluation batch the datamodule's default `eval_batch_size`
(256 on Fashion-MNIST, 512 on digits), as a user's run has it. The network is first trained
for one epoch, so the MIA features are those of a trained model, and evaluated once (both
warm-ups); then the two are timed in ABBA order and the medians are reported with their ratio
(evaluation / epoch). The audited pass is the same call with ``audits="standard"``
(`evaluate_pass(..., attacks=True)`: the threshold, entropy and loss membership attacks and the
per-example margins from the same forward pass); its cost over the plain pass is the audits'.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch

from benchmarks.common import datamodule, emit, epoch_time, seed, sync
from lightning_unlearn.data import ForgetSpec
from lightning_unlearn.metrics.evaluation import evaluate, evaluate_pass
from lightning_unlearn.models import ImageClassifier, SmallCNN


def evaluation_time(model: torch.nn.Module, dm, device: str) -> float:
    """Seconds of one `evaluate(model, dm)`, the callback's whole evaluation pass."""
    sync()
    t0 = time.perf_counter()
    evaluate(model, dm, device)
    sync()
    return time.perf_counter() - t0


def audited_time(model: torch.nn.Module, dm, device: str) -> float:
    """Seconds of the same pass with the population audits (``audits="standard"``)."""
    sync()
    t0 = time.perf_counter()
    evaluate_pass(model, dm.evaluation_dataloaders(), device, attacks=True)
    sync()
    return time.perf_counter() - t0


def run(train_size: int, test_size: int, repeats: int, data: str = "fashion-mnist") -> tuple[dict, str]:
    seed(0)
    dm = datamodule(data, ForgetSpec(ratio=0.1, seed=0), train_size, test_size, batch_size=256)
    dm.setup("fit")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    classifier = ImageClassifier(SmallCNN(1, 10, width=16, pool_size=4), lr=0.01)
    epoch_time(classifier, dm)  # warm-up, and a trained network for the MIA features
    model = classifier.model.to(device)
    evaluation_time(model, dm, device)  # warm-ups
    audited_time(model, dm, device)
    epochs, passes, audited = [], [], []
    for i in range(repeats):  # ABBA order
        runs = [
            lambda: epochs.append(epoch_time(ImageClassifier(copy.deepcopy(model), lr=0.01), dm)),
            lambda: passes.append(evaluation_time(model, dm, device)),
            lambda: audited.append(audited_time(model, dm, device)),
        ]
        for run_one in runs if i % 2 == 0 else runs[::-1]:
            run_one()
    result = dict(
        evaluation_s=statistics.median(passes),
        epoch_s=statistics.median(epochs),
        audited_s=statistics.median(audited),
        train_size=len(dm.train_set),
        test_size=len(dm.test_set),
        eval_batch_size=dm.eval_batch_size,
        repeats=repeats,
    )
    result["ratio"] = result["evaluation_s"] / result["epoch_s"]
    result["audited_ratio"] = result["audited_s"] / result["epoch_s"]
    result["audit_overhead"] = result["audited_s"] / result["evaluation_s"]
    table = (
        "| train / test images | UnlearningEvaluation pass | training epoch | ratio |\n|---|---|---|---|\n"
        f"| {result['train_size']:,} / {result['test_size']:,} | {result['evaluation_s']:.2f} s"
        f" | {result['epoch_s']:.2f} s | {result['ratio']:.2f}× |\n"
        f'| same, `audits="standard"` | {result["audited_s"]:.2f} s | {result["epoch_s"]:.2f} s'
        f" | {result['audited_ratio']:.2f}× ({result['audit_overhead']:.2f}× the plain pass) |"
    )
    return result, table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--train-size", type=int, default=10000)
    parser.add_argument("--test-size", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data", default="fashion-mnist", choices=["fashion-mnist", "digits"])
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    result, table = run(args.train_size, args.test_size, args.repeats, args.data)
    emit("evaluation_speed", result, table, args.out)


if __name__ == "__main__":
    main()
