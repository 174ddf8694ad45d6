"""Overhead, measured in one run as ratios:

1. a method wrapper's training epoch vs a hand-written PyTorch loop on the same data, model and
   optimiser (FineTune vs `for x, y in loader: sgd step`);
2. per optimizer step with vs without each registered gradient/weight callback (RandomLabel);
3. per optimizer step of ImplicitGradientSurgery(mode="eu_fast") vs NegGrad+, both one forward/
   backward over a forget batch paired with a retain batch, same optimiser settings (its `w`
   update runs inside the training step, so the step time includes it);
4. peak memory with vs without (CUDA only).

    python -m benchmarks.overhead [--train-size 10000] [--repeats 3] [--out results/overhead.json]

Runs are interleaved in ABBA order and the median is reported, so drifting machine load and
warm-up affect both sides alike.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections.abc import Callable

import lightning as L
import torch
import torch.nn.functional as F

from benchmarks.common import QUIET, StepTimer, accelerator, datamodule, emit, epoch_time, seed, sync
from lightning_unlearn import registry
from lightning_unlearn.data import ForgetSpec
from lightning_unlearn.methods import FineTune, ImplicitGradientSurgery, NegGradPlus, RandomLabel
from lightning_unlearn.models import SmallCNN

SKIP_CALLBACKS = {"evaluation"}  # evaluation runs before/after fit, not per step
PREREQUISITES = {"unpruning": ["magnitude_pruning"]}  # measured against a baseline that has these
OPTIMISER = dict(lr=0.01, momentum=0.9, weight_decay=5e-4)  # both sides of the method comparison


def hand_written_epoch(model: torch.nn.Module, loader, lr: float, device: str) -> float:
    model = model.to(device).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    sync()
    t0 = time.perf_counter()
    for x, y in loader:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
    sync()
    return time.perf_counter() - t0


def step_time(method: L.LightningModule, dm, callbacks, steps: int) -> tuple[float, float]:
    """Median steady-state optimizer step (s) of `method` with `callbacks`, and peak CUDA memory (MiB)."""
    timer = StepTimer(skip=3)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    trainer = L.Trainer(
        **QUIET, max_steps=steps, max_epochs=1000, accelerator=accelerator(), devices=1, callbacks=[*callbacks, timer]
    )
    trainer.fit(method, datamodule=dm)
    peak = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else float("nan")
    return timer.per_step, peak


Setup = Callable[[], tuple[L.LightningModule, list]]


def paired_steps(base: Setup, other: Setup, dm, repeats: int, steps: int) -> dict:
    """`step_time` of two fresh (method, callbacks) setups in ABBA order, so drift and warm-up
    effects hit both sides alike: median step in ms of each, their ratio, peak memory of each."""
    times, peaks = {"base": [], "with": []}, {"base": [], "with": []}
    for i in range(repeats):
        for side in ("base", "with") if i % 2 == 0 else ("with", "base"):
            method, callbacks = (base if side == "base" else other)()
            t, peak = step_time(method, dm, callbacks, steps)
            times[side].append(t)
            peaks[side].append(peak)
    b, w = statistics.median(times["base"]), statistics.median(times["with"])
    return dict(base_ms=1e3 * b, with_ms=1e3 * w, ratio=w / b, peak_mb_base=max(peaks["base"]), peak_mb_with=max(peaks["with"]))


def prerequisites(name: str) -> list:
    return [registry.get(other).cls() for other in PREREQUISITES.get(name, [])]


def run(train_size: int, repeats: int, steps: int, data: str = "fashion-mnist") -> tuple[dict, str]:
    seed(0)
    dm = datamodule(data, ForgetSpec(ratio=0.1, seed=0), train_size, 2000, batch_size=256)
    dm.setup("fit")
    model = SmallCNN(1, 10, width=16, pool_size=4)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    # 1. wrapper vs hand-written loop, same sampler order and batch size
    ours, hand = [], []
    for i in range(repeats):  # ABBA order
        runs = [
            lambda: ours.append(epoch_time(FineTune(copy.deepcopy(model), lr=0.01), dm)),
            lambda: hand.append(
                hand_written_epoch(copy.deepcopy(model), dm._shuffled(dm.split("retain"), dm.batch_size, 2), 0.01, device)
            ),
        ]
        for run_one in runs if i % 2 == 0 else runs[::-1]:
            run_one()
    loop = dict(lightning_s=statistics.median(ours), hand_s=statistics.median(hand))
    loop["ratio"] = loop["lightning_s"] / loop["hand_s"]
    # 2. per-step overhead of each callback
    rows = []
    for entry in registry.entries("callback"):
        if entry.name in SKIP_CALLBACKS:
            continue
        rows.append(
            dict(
                callback=entry.cls.__name__,
                **paired_steps(
                    lambda entry=entry: (RandomLabel(copy.deepcopy(model)), prerequisites(entry.name)),
                    lambda entry=entry: (RandomLabel(copy.deepcopy(model)), [*prerequisites(entry.name), entry.cls()]),
                    dm,
                    repeats,
                    steps,
                ),
            )
        )
    # 3. implicit gradient surgery (eu_fast) vs the plain paired-batch method
    implicit_fast = paired_steps(
        lambda: (NegGradPlus(copy.deepcopy(model), **OPTIMISER), []),
        lambda: (ImplicitGradientSurgery(copy.deepcopy(model), mode="eu_fast", **OPTIMISER), []),
        dm,
        repeats,
        steps,
    )
    table = (
        f"| comparison | ours | baseline | ratio |\n|---|---|---|---|\n"
        f"| FineTune epoch vs hand-written loop | {loop['lightning_s']:.2f} s | {loop['hand_s']:.2f} s | {loop['ratio']:.3f}× |\n"
    )
    table += "\n".join(
        f"| RandomLabel step + {r['callback']} | {r['with_ms']:.1f} ms | {r['base_ms']:.1f} ms | {r['ratio']:.3f}× |"
        for r in rows
    )
    table += (
        f"\n| ImplicitGradientSurgery(eu_fast) step vs NegGrad+ step | {implicit_fast['with_ms']:.1f} ms"
        f" | {implicit_fast['base_ms']:.1f} ms | {implicit_fast['ratio']:.3f}× |"
    )
    return {"loop": loop, "callbacks": rows, "implicit_fast": implicit_fast, "train_size": train_size, "repeats": repeats}, table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--train-size", type=int, default=10000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--data", default="fashion-mnist", choices=["fashion-mnist", "digits"])
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    result, table = run(args.train_size, args.repeats, args.steps, args.data)
    emit("overhead", result, table, args.out)


if __name__ == "__main__":
    main()
