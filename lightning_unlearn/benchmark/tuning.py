"""``lightning-unlearn tune``: choose a method's hyper-parameters on *your* model and request,
without a retrained oracle.

A benchmark tunes against Retrain (:mod:`benchmarks.tune`); a user who could afford a Retrain
would not unlearn. This tuner scores every trial against targets that need no retrained model,
measured on the original and on held-out data:

* **class-wise** (the request names classes): a model that never saw a class does not predict it,
  so the forget accuracy should fall to that level (UA 100 %) and the forget set's true-class
  confidence with it (MIA-efficacy 100 %); retained accuracy should stay at the original's (RA),
  and test accuracy at the original's with the forgotten classes' test examples counted wrong
  (TA). A trial is *feasible* when RA and the test accuracy on the other classes drop by at
  most ``max_drop`` points below the original's.
* **random** (the request names examples): a model that never saw them treats them like
  held-out data. The forget accuracy should equal the model's own test accuracy (UA = 100 -
  TA); the population attack (OPTML's SVC on true-class confidences, trained on retain vs one
  half of the test set) should call as many forget examples non-member as it calls examples of
  the other, unseen half of the test set; a loss-threshold attack should not tell forget losses
  from test losses (AUC 50 %); RA and TA should stay at the original's. Feasible when RA and TA
  drop by at most ``max_drop`` points.

The score is the mean distance to those targets (points): an oracle-free estimate of the
Avg. Gap to Retrain (random requests add the loss-AUC term). The best feasible trial wins (ties:
the shorter run); with no feasible trial the best score wins and the result says so.

The search is a budgeted line search on a log grid: one-epoch probes move the learning rate by
factors of 3 from the row's value towards lower scores (infeasible trials rank last); the two
best probes run at the row's full length (a constant-lr fit is read after every epoch, so each
epoch count is a trial), then sqrt(3) either side of the best; a row whose schedule spans the
fit (cosine, decaying l1) then tries shorter fits; last, the row's extra knobs (mask threshold,
SSD's alpha, the epoch fraction of a subsampled row) at the best setting. The budget is a
fraction of one Retrain, estimated without training one: the time of a training step on D_r
(timed over a few steps) x the steps of the original's recipe. On the CPU the budget counts the
process's CPU time, so other jobs on a shared machine neither shrink nor stretch it; on an
accelerator, wall time. Every trial (knobs, scores, parts, feasibility, seconds) is kept.

Python::

    from lightning_unlearn.benchmark.tuning import tune_config
    result = tune_config("my_compare.yaml", rows=["salun"], budget=0.5, weights="original.ckpt")
    result["chosen"]["salun"]        # a compare row: {method, max_epochs, init_args, callbacks, ...}

Command line::

    lightning-unlearn tune --config my_compare.yaml --rows salun --budget 0.5 \\
        --weights original.ckpt --output tune.json --write-rows tuned.yaml
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Optional

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_unlearn import registry
from lightning_unlearn.benchmark.config import REFERENCE, Config, MethodSpec, load_config, resolve_config_args
from lightning_unlearn.benchmark.runner import quiet_fit_warnings, run_row, train_original, trainer_options
from lightning_unlearn.data.datamodule import UnlearningDataModule
from lightning_unlearn.methods.one_shot import OneShotEdit
from lightning_unlearn.methods.scrub import SCRUB
from lightning_unlearn.metrics.functional import mia_efficacy, true_class_confidence
from lightning_unlearn.metrics.functional.mia import Backend
from lightning_unlearn.models.network import copy_network
from lightning_unlearn.models.weights import load_weights
from lightning_unlearn.report import json_safe
from lightning_unlearn.validation import check_float, check_int

__all__ = [
    "EXTRA_KNOBS",
    "OracleFreeTargets",
    "SampleCounter",
    "estimate_retrain_seconds",
    "main",
    "oracle_free_gap",
    "oracle_free_scores",
    "oracle_free_targets",
    "tune_config",
    "tune_row",
]

#: Extra knobs tried at the best learning rate, per registry name (method or callback).
EXTRA_KNOBS: dict[str, dict[str, tuple[Any, ...]]] = {
    "saliency_mask": {"threshold": (0.3, 0.5, 0.7)},
    "ssd": {"alpha": (1.0, 2.0, 5.0, 10.0)},
    "lfssd": {"alpha": (1.0, 2.0, 5.0, 10.0)},
    "sparsity_regularization": {"alpha": (1e-4, 5e-4)},
}
#: Callbacks whose schedule spans the fit (each epoch count is its own fit).
FIT_LENGTH_DEPENDENT = {"sparsity_regularization"}


# ---------------------------------------------------------------------------------- cost
class SampleCounter(L.Callback):
    """Counts the examples a fit forwards and backpropagates, per split (``samples``), so a run's
    cost reads as epochs-equivalent of the training set D: ``samples / (|D_f| + |D_r|)``.

    Teacher forwards and evaluation passes are not counted. For the one-shot edits (SSD, Fisher,
    influence), which use each split once however their loader cycles it, a split counts at most
    its size per epoch; for SCRUB, forget examples count only in its max-step epochs (``msteps``),
    at most |D_f| per epoch (its max-steps pass over D_f once).
    """

    def __init__(self) -> None:
        self.samples: dict[str, int] = {}
        self._epoch: dict[str, int] = {}

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._epoch = {}

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        parts = batch.items() if isinstance(batch, Mapping) else [("retain", batch)]
        once = isinstance(pl_module, OneShotEdit)
        scrub = isinstance(pl_module, SCRUB)
        data = trainer.datamodule if isinstance(trainer.datamodule, UnlearningDataModule) else None  # type: ignore[attr-defined]
        for name, part in parts:
            n = len(part[0]) if isinstance(part, (tuple, list)) else len(part)
            if isinstance(pl_module, SCRUB) and name == "forget" and trainer.current_epoch >= pl_module.msteps:
                n = 0
            if (once or (scrub and name == "forget")) and data is not None and name in ("forget", "retain"):
                n = max(0, min(n, len(data.split(name)) - self._epoch.get(name, 0)))  # type: ignore[arg-type]
            self._epoch[name] = self._epoch.get(name, 0) + n
            self.samples[name] = self.samples.get(name, 0) + n

    def epochs_equivalent(self, datamodule: UnlearningDataModule) -> float:
        """Examples processed / |D| (D = D_f + D_r)."""
        return sum(self.samples.values()) / (len(datamodule.forget_indices) + len(datamodule.retain_indices))


def estimate_retrain_seconds(
    network: nn.Module,
    datamodule: UnlearningDataModule,
    epochs: int,
    steps: int = 20,
    lr: float = 0.05,
    clock: Any = time.perf_counter,
) -> float:
    """Seconds one Retrain would take, without training one: the mean time (by ``clock``) of
    ``steps`` SGD steps (forward, backward, step; momentum 0.9) of a copy of ``network`` on D_r
    batches of the training batch size, times the steps of ``epochs`` epochs over D_r. Lightning's
    own overhead (a few per cent) is not included."""
    epochs = check_int(epochs, "epochs", minimum=1, hint="the epochs of the original's training recipe")
    model = copy_network(network).train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=lr, momentum=0.9)
    device = params[0].device
    loader = torch.utils.data.DataLoader(datamodule.split("retain"), batch_size=datamodule.batch_size, shuffle=False)
    times = []
    with torch.random.fork_rng(devices=[]):
        for i, (x, y) in enumerate(loader):
            if i > steps:
                break
            tic = clock()
            loss = F.cross_entropy(model(x.to(device)), y.to(device))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if i > 0:  # the first step warms up
                times.append(clock() - tic)
    per_step = sum(times) / max(len(times), 1)
    return per_step * math.ceil(len(datamodule.retain_indices) / datamodule.batch_size) * epochs


# ---------------------------------------------------------------------------------- scores
@torch.no_grad()
def _logits(model: nn.Module, batches: Iterable, device: torch.device, limit: Optional[int] = None) -> tuple[Tensor, Tensor]:
    outs, ys, seen = [], [], 0
    for x, y in batches:
        outs.append(model(x.to(device)).float())
        ys.append(y.to(device))
        seen += len(y)
        if limit is not None and seen >= limit:
            break
    logits, y = torch.cat(outs), torch.cat(ys)
    return (logits[:limit], y[:limit]) if limit is not None else (logits, y)


def _loss_auc(member_losses: Tensor, heldout_losses: Tensor) -> float:
    """AUC of the loss-threshold attack "lower loss = member": P(member loss < held-out loss) +
    1/2 P(tie), from average ranks (Mann-Whitney U)."""
    both = torch.cat([member_losses, heldout_losses]).double()
    order = torch.argsort(both, stable=True)
    ranks = torch.empty_like(both)
    ranks[order] = torch.arange(1, len(both) + 1, dtype=both.dtype, device=both.device)
    _, inverse, counts = torch.unique(both, return_inverse=True, return_counts=True)
    sums = torch.zeros(len(counts), dtype=both.dtype, device=both.device).index_add_(0, inverse, ranks)
    ranks = (sums / counts)[inverse]  # average ranks of ties
    n_m, n_h = len(member_losses), len(heldout_losses)
    u_heldout = ranks[n_m:].sum() - n_h * (n_h + 1) / 2  # pairs where the held-out loss is larger
    return float(u_heldout / (n_m * n_h))


def oracle_free_scores(
    model: nn.Module, datamodule: UnlearningDataModule, retain_limit: int = 4000, mia_backend: Backend = "torch"
) -> dict[str, float]:
    """What the oracle-free targets compare, in percent (eval mode, test-time transforms).

    Returns:
        ``ua``, ``ra`` (on the first ``max(retain_limit, |D_t|)`` retain examples, dataset order),
        ``ta``, ``mia`` (OPTML MIA-efficacy: attack trained on those retain vs all test examples,
        applied to D_f, as :class:`~lightning_unlearn.callbacks.UnlearningEvaluation`);
        class-wise requests add ``ta_rest`` (test accuracy on the other classes) and
        ``rest_share`` (their share of the test set); random requests add ``mia_forget`` and
        ``mia_heldout`` (one attack trained on retain vs the even-indexed test examples, applied
        to D_f and to the odd-indexed ones) and ``loss_auc`` (loss-threshold attack, D_f vs test).
    """
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        test = _logits(model, datamodule.test_dataloader(), device)
        forget = _logits(model, datamodule.forget_dataloader(), device)
        retain = _logits(model, datamodule.retain_dataloader(), device, limit=max(retain_limit, len(test[1])))
    finally:
        model.train(was_training)
    acc = {
        name: 100.0 * float((logits.argmax(1) == y).float().mean())
        for name, (logits, y) in (("forget", forget), ("retain", retain), ("test", test))
    }
    conf = {name: true_class_confidence(*pair) for name, pair in (("forget", forget), ("retain", retain), ("test", test))}
    scores = {
        "ua": 100.0 - acc["forget"],
        "ra": acc["retain"],
        "ta": acc["test"],
        "mia": 100.0 * float(mia_efficacy(conf["retain"], conf["test"], conf["forget"], backend=mia_backend)),
    }
    classes = datamodule.forget.classes
    if classes:
        rest = ~torch.isin(test[1], torch.as_tensor(list(classes), device=test[1].device))
        scores["ta_rest"] = 100.0 * float((test[0].argmax(1)[rest] == test[1][rest]).float().mean()) if rest.any() else 0.0
        scores["rest_share"] = float(rest.float().mean())
    else:
        half_a, half_b = conf["test"][0::2], conf["test"][1::2]
        scores["mia_forget"] = 100.0 * float(mia_efficacy(conf["retain"], half_a, conf["forget"], backend=mia_backend))
        scores["mia_heldout"] = 100.0 * float(mia_efficacy(conf["retain"], half_a, half_b, backend=mia_backend))
        losses = {
            name: F.cross_entropy(logits, y, reduction="none") for name, (logits, y) in (("forget", forget), ("test", test))
        }
        scores["loss_auc"] = 100.0 * _loss_auc(losses["forget"], losses["test"])
    return scores


@dataclass(frozen=True)
class OracleFreeTargets:
    """The targets of a request, from the original's scores (percent; see the module docstring).

    Attributes:
        classwise: the request forgets whole classes.
        ra: the original's retain accuracy.
        ta: class-wise: the original's test accuracy with the forgotten classes counted wrong;
            random: the original's test accuracy.
        ta_rest: class-wise: the original's test accuracy on the other classes.
        max_drop: the allowed drop of RA and TA (class-wise: of the other classes' TA), points.
    """

    classwise: bool
    ra: float
    ta: float
    ta_rest: Optional[float] = None
    max_drop: float = 1.0


def oracle_free_targets(original: Mapping[str, float], classwise: bool, max_drop: float = 1.0) -> OracleFreeTargets:
    """:class:`OracleFreeTargets` from :func:`oracle_free_scores` of the original model."""
    max_drop = check_float(max_drop, "max_drop", minimum=0.0, hint="points of retain/test accuracy a trial may lose, e.g. 1.0")
    if classwise:
        return OracleFreeTargets(
            True, original["ra"], original["ta_rest"] * original["rest_share"], original["ta_rest"], max_drop
        )
    return OracleFreeTargets(False, original["ra"], original["ta"], None, max_drop)


def oracle_free_gap(scores: Mapping[str, float], targets: OracleFreeTargets) -> dict[str, Any]:
    """Distance of a trial's :func:`oracle_free_scores` to the targets.

    Returns:
        ``{"score": mean of the parts, "parts": {...}, "feasible": bool}`` (points). Class-wise
        parts: ``ua`` |UA - 100|, ``ra`` |RA - RA*|, ``ta`` |TA - TA*|, ``mia`` |MIA - 100|;
        feasible when RA >= RA* - max_drop and TA on the other classes >= its original - max_drop.
        Random parts: ``ua`` |UA - (100 - TA)|, ``ra``, ``ta`` (to the original's), ``mia``
        |MIA(D_f) - MIA(held-out)| under one attack, ``loss`` |loss AUC - 50|; feasible when RA and
        TA are within max_drop of the original's.
    """
    if targets.classwise:
        if targets.ta_rest is None:
            raise ValueError("Class-wise oracle-free targets need `ta_rest` (the original's accuracy on the other classes).")
        parts = {
            "ua": abs(scores["ua"] - 100.0),
            "ra": abs(scores["ra"] - targets.ra),
            "ta": abs(scores["ta"] - targets.ta),
            "mia": abs(scores["mia"] - 100.0),
        }
        feasible = scores["ra"] >= targets.ra - targets.max_drop and scores["ta_rest"] >= targets.ta_rest - targets.max_drop
    else:
        parts = {
            "ua": abs(scores["ua"] - (100.0 - scores["ta"])),
            "ra": abs(scores["ra"] - targets.ra),
            "ta": abs(scores["ta"] - targets.ta),
            "mia": abs(scores["mia_forget"] - scores["mia_heldout"]),
            "loss": abs(scores["loss_auc"] - 50.0),
        }
        feasible = scores["ra"] >= targets.ra - targets.max_drop and scores["ta"] >= targets.ta - targets.max_drop
    return {"score": sum(parts.values()) / len(parts), "parts": parts, "feasible": bool(feasible)}


class _EpochScorer(L.Callback):
    """Scores the network after every epoch of a fit (evaluation time excluded from ``runtime_s``)."""

    def __init__(self, datamodule: UnlearningDataModule, targets: OracleFreeTargets, retain_limit: int, mia_backend: Backend):
        self.datamodule, self.targets, self.retain_limit, self.mia_backend = datamodule, targets, retain_limit, mia_backend
        self.counter = SampleCounter()
        self.scores: list[dict[str, Any]] = []
        self.scoring_s, self._fit_s, self._tic = 0.0, 0.0, 0.0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._tic = time.perf_counter()

    def _record(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._fit_s += time.perf_counter() - self._tic
        tic = time.perf_counter()
        model = pl_module.model
        if not isinstance(model, nn.Module):
            raise TypeError(f"{type(pl_module).__name__}.model must be an nn.Module to be scored, got {type(model).__name__}.")
        scores = oracle_free_scores(model, self.datamodule, self.retain_limit, self.mia_backend)
        self.scores.append(
            {
                "epochs": len(self.scores) + 1,
                "runtime_s": self._fit_s,
                "epochs_equivalent": self.counter.epochs_equivalent(self.datamodule),
                "scores": scores,
                **oracle_free_gap(scores, self.targets),
            }
        )
        self.scoring_s += time.perf_counter() - tic
        self._tic = time.perf_counter()

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch > 0:
            self._record(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._record(trainer, pl_module)


# ---------------------------------------------------------------------------------- search
def _spec_dict(spec: MethodSpec) -> dict[str, Any]:
    out = {"method": spec.method, "max_epochs": int(spec.max_epochs), "init_args": json_safe(spec.init_args)}
    if spec.callbacks:
        out["callbacks"] = json_safe(spec.callbacks)
    if spec.trainer:
        out["trainer"] = json_safe(spec.trainer)
    return out


def _length_dependent(spec: MethodSpec) -> bool:
    return (
        bool(spec.init_args.get("lr_scheduler"))
        or "max_steps" in (spec.trainer or {})
        or any(c["callback"] in FIT_LENGTH_DEPENDENT for c in spec.callbacks)
    )


def _clock(accelerator: str = "auto") -> Any:
    """The budget's clock: process CPU time when the fits run on the CPU (robust to other jobs on a
    shared machine, and the Retrain estimate is timed by the same clock), wall time on an accelerator."""
    on_cpu = accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available())
    return time.process_time if on_cpu else time.perf_counter


class _Budget:
    def __init__(self, seconds: float, progress: bool, label: str, clock: Any = time.perf_counter) -> None:
        self.clock = clock
        self.seconds, self.start = seconds, clock()
        self.bar = None
        if progress:
            from tqdm.auto import tqdm

            self.bar = tqdm(
                total=round(seconds, 1),
                unit="s",
                desc=label,
                file=sys.stderr,
                leave=True,
                bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f} s of budget{postfix}",
            )

    @property
    def spent(self) -> float:
        return self.clock() - self.start

    def allows(self, predicted: float) -> bool:
        return self.spent + predicted <= self.seconds

    def tick(self, best: Optional[dict]) -> None:
        if self.bar is not None:
            self.bar.n = min(round(self.spent, 1), self.bar.total)
            if best is not None:
                self.bar.set_postfix_str(f"best {best['score']:.2f}{'' if best['feasible'] else ' (infeasible)'}")
            self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _better(a: dict, b: Optional[dict]) -> bool:
    if b is None:
        return True
    key = lambda t: (not t["feasible"], round(t["score"], 2), t["runtime_s"])  # noqa: E731
    return key(a) < key(b)


def tune_row(
    spec: MethodSpec,
    original: nn.Module,
    datamodule: UnlearningDataModule,
    *,
    budget: float = 0.5,
    retrain_epochs: int = 12,
    retrain_seconds: Optional[float] = None,
    max_drop: float = 1.0,
    seed: int = 0,
    name: str = "row",
    retain_limit: int = 4000,
    mia_backend: Backend = "torch",
    accelerator: str = "auto",
    precision: Optional[str] = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Chooses ``spec``'s hyper-parameters on ``original`` and ``datamodule``'s request without a
    retrained model (see the module docstring).

    Args:
        spec: the row to tune; its ``lr`` is the search's starting point and its ``max_epochs``
            the longest fit tried.
        original: the trained model (never modified).
        datamodule: the data and the deletion request.
        budget: time allowed (CPU time on the CPU, else wall time), as a fraction of one Retrain (> 0).
        retrain_epochs: the epochs of the original's training recipe (a Retrain's length).
        retrain_seconds: a known Retrain time (seconds); default: :func:`estimate_retrain_seconds`.
        max_drop: retain/test accuracy a feasible trial may lose, points.
        seed: the seed of every fit.
        name: the row's name (in progress and results).
        retain_limit: retain examples scored per trial (at least |D_t|).
        mia_backend: the MIA attack backend.
        accelerator: Lightning accelerator.
        precision: Lightning precision of the fits.
        progress: show a progress bar over the budget.

    Returns:
        ``{"row", "classwise", "budget", "retrain_s", "budget_s", "spent_s", "original",
        "targets", "trials", "chosen", "chosen_trial", "feasible", "stopped"}``; ``chosen`` is a
        compare row (``method``, ``max_epochs``, ``init_args``, ``callbacks``, ``trainer``).

    Raises:
        ValueError: ``budget`` not positive, or a row that cannot run on this request (before
            any trial counts).
    """
    budget = check_float(budget, "budget", minimum=0.0, open_minimum=True, hint="a fraction of one Retrain, e.g. 0.5")
    classwise = bool(datamodule.forget.classes)
    device_model = copy_network(original)
    timer = _clock(accelerator)
    tic = timer()
    if retrain_seconds is None:
        retrain_seconds = estimate_retrain_seconds(device_model, datamodule, retrain_epochs, clock=timer)
    original_scores = oracle_free_scores(device_model, datamodule, retain_limit, mia_backend)
    targets = oracle_free_targets(original_scores, classwise, max_drop)
    clock = _Budget(budget * retrain_seconds, progress, f"tune {name}", timer)
    clock.start = tic
    trials: list[dict[str, Any]] = []
    best: Optional[dict] = None
    per_epoch_s: Optional[float] = None
    tried: set[str] = set()
    stopped = "search done"

    def run(candidate: MethodSpec) -> list[dict]:
        """One fit of ``candidate``; returns its trials (one per epoch count it can be read at)."""
        nonlocal best, per_epoch_s, stopped
        key = json.dumps(_spec_dict(candidate), sort_keys=True)
        if key in tried:
            return [t for t in trials if t["key"] == key]
        fraction = float((candidate.trainer or {}).get("limit_train_batches") or 1.0)
        predicted = 0.0 if per_epoch_s is None else per_epoch_s * candidate.max_epochs * fraction
        if trials and not clock.allows(predicted):
            stopped = "budget"
            return []
        tried.add(key)
        scorer = _EpochScorer(datamodule, targets, retain_limit, mia_backend)
        started = clock.spent
        try:
            run_row(
                candidate,
                original,
                datamodule,
                seed,
                evaluation=False,
                callbacks=[scorer.counter, scorer],
                accelerator=accelerator,
                precision=precision,
            )
        except ValueError as error:  # a setting this request rules out (e.g. SSD's alpha)
            trials.append({"key": key, "row": name, **_spec_dict(candidate), "rejected": str(error)})
            return []
        epochs_run = max(len(scorer.scores), 1)
        per_epoch_s = max(clock.spent - started, 1e-3) / epochs_run / fraction
        read = scorer.scores if not _length_dependent(candidate) else scorer.scores[-1:]
        out = []
        for score in read:
            trial = {
                "key": key,
                "row": name,
                **_spec_dict(
                    replace(candidate, max_epochs=score["epochs"] if not _length_dependent(candidate) else candidate.max_epochs)
                ),
                **score,
            }
            trials.append(trial)
            out.append(trial)
            if _better(trial, best):
                best = trial
        clock.tick(best)
        return out

    parameters = registry.init_parameters(registry.get(spec.method).cls)
    takes_lr = "lr" in parameters and spec.method != REFERENCE
    base_lr = float(spec.init_args.get("lr", parameters["lr"].default)) if takes_lr else None
    length_dependent = _length_dependent(spec)

    def with_lr(level: float, base: MethodSpec) -> MethodSpec:
        if base_lr is None:
            raise ValueError(f"{spec.method} takes no `lr`: there is no learning rate to search.")
        return replace(base, init_args={**base.init_args, "lr": float(f"{base_lr * 3**level:.3g}")})

    def score_of(level: float, base: MethodSpec) -> Optional[float]:
        results = run(with_lr(level, base))
        return min((t["score"] + (100.0 if not t["feasible"] else 0.0) for t in results), default=None)

    current = replace(
        spec, init_args=dict(spec.init_args), callbacks=[dict(c) for c in spec.callbacks], trainer=dict(spec.trainer or {})
    )
    if takes_lr:
        # 1. probes: one-epoch fits at factors of 3 from the row's lr, towards lower scores (27x at most)
        probe = replace(current, max_epochs=1)
        probed = {level: score_of(level, probe) for level in (0, -1, 1)}
        known: dict[float, float] = {k: v for k, v in probed.items() if v is not None}
        if known:
            step = -1 if known.get(-1, math.inf) < known.get(1, math.inf) else 1
            level: float = step
            while abs(level) < 3 and known.get(level) is not None and known[level] <= min(known.values()):
                level += step
                value = score_of(level, probe)
                if value is None:
                    break
                known[level] = value
            # 2. the full length at the best probe (every epoch count read from it for a constant lr)
            ranked = sorted(known, key=lambda k: known[k])
            full: dict[float, float] = {}
            for level in ranked[:2]:
                if spec.max_epochs > 1:
                    value = score_of(level, current)
                    if value is not None:
                        full[level] = value
            # 3. fine: sqrt(3) either side of the best full-length level
            if full:
                centre = min(full, key=lambda k: full[k])
                for level in (centre - 0.5, centre + 0.5):
                    score_of(level, current)
    # 4. shorter fits of a length-dependent row at the best setting
    if length_dependent and best is not None:
        chosen_spec = MethodSpec(
            best["method"], best["max_epochs"], best["init_args"], best.get("callbacks") or [], trainer=best.get("trainer") or {}
        )
        for epochs in range(1, spec.max_epochs):
            run(replace(chosen_spec, max_epochs=epochs))
    # 5. extra knobs at the best setting, one at a time
    base = (
        MethodSpec(
            best["method"], spec.max_epochs, best["init_args"], best.get("callbacks") or [], trainer=best.get("trainer") or {}
        )
        if best is not None
        else current
    )
    knobs: list[tuple[Optional[int], str, tuple[Any, ...]]] = [(None, k, v) for k, v in EXTRA_KNOBS.get(spec.method, {}).items()]
    for i, callback in enumerate(base.callbacks):
        knobs += [(i, k, v) for k, v in EXTRA_KNOBS.get(callback["callback"], {}).items()]
    limit = (base.trainer or {}).get("limit_train_batches")
    for where, key, values in knobs:
        for value in values:
            init_args = dict(base.init_args)
            callbacks = [{"callback": c["callback"], "init_args": dict(c.get("init_args") or {})} for c in base.callbacks]
            (init_args if where is None else callbacks[where]["init_args"])[key] = value
            run(replace(base, init_args=init_args, callbacks=callbacks))
    if isinstance(limit, float):
        for factor in (0.5, 2.0):
            run(replace(base, trainer={**base.trainer, "limit_train_batches": min(1.0, float(f"{limit * factor:.3g}"))}))
    clock.tick(best)
    clock.close()
    if best is None:
        raise ValueError(
            f"Row {name!r}: no trial could run on this request; see the rejected trials: "
            + "; ".join(t["rejected"] for t in trials if "rejected" in t)
        )
    if not best["feasible"]:
        warnings.warn(
            f"Row {name!r}: no trial kept retain and test accuracy within {max_drop} points of the"
            " original's; the chosen one is the closest to the targets. Widen the search (a larger budget or"
            " another starting lr) or allow a larger --max-drop.",
            stacklevel=2,
        )
    chosen = {k: best[k] for k in ("method", "max_epochs", "init_args", "callbacks", "trainer") if k in best}
    for trial in trials:
        trial.pop("key", None)
    return {
        "row": name,
        "classwise": classwise,
        "budget": budget,
        "retrain_s": retrain_seconds,
        "budget_s": budget * retrain_seconds,
        "spent_s": clock.spent,
        "original": original_scores,
        "targets": asdict(targets),
        "trials": trials,
        "chosen": chosen,
        "chosen_trial": {k: v for k, v in best.items() if k != "key"},
        "feasible": best["feasible"],
        "stopped": stopped,
    }


def tune_config(
    config: Config,
    rows: Optional[Sequence[str]] = None,
    *,
    budget: float = 0.5,
    weights: Optional[str] = None,
    max_drop: float = 1.0,
    progress: bool = True,
) -> dict[str, Any]:
    """:func:`tune_row` for the rows of a compare config (Retrain rows are skipped: no oracle).

    Args:
        config: a compare config (YAML path, mapping or parsed Namespace): its ``data`` is the
            request, its ``model`` the architecture, its ``original`` the training recipe.
        rows: the rows to tune (default: every non-Retrain row).
        budget: each row's budget, a fraction of one Retrain.
        weights: a trained model's weights to load into ``model`` (``weights_only=True``); without
            them the original is trained as ``compare`` does.
        max_drop: retain/test accuracy a feasible trial may lose, points.
        progress: progress bars.

    Returns:
        ``{"forget", "seed", "budget", "rows": {name: tune_row result}, "chosen": {name: compare row}}``.

    Raises:
        ValueError: an invalid config, an unknown row, or a row that cannot run on this request.
    """
    cfg, specs, original_spec = load_config(config)
    datamodule, seed = cfg.data, int(cfg.seed)
    names = [n for n, s in specs.items() if s.method != REFERENCE] if not rows else list(rows)
    unknown = [n for n in names if n not in specs or specs[n].method == REFERENCE]
    if unknown:
        raise ValueError(
            f"rows {unknown} are not tunable rows of the config; its rows are"
            f" {[n for n, s in specs.items() if s.method != REFERENCE]}."
        )
    options = trainer_options(cfg)
    with quiet_fit_warnings():
        if weights is not None:
            original = load_weights(cfg.model, weights)
            datamodule.setup("fit")
        else:
            original, _ = train_original(cfg.model, datamodule, original_spec, seed, **options)
        results = {
            name: tune_row(
                specs[name],
                original,
                datamodule,
                budget=budget,
                retrain_epochs=original_spec.max_epochs,
                max_drop=max_drop,
                seed=seed,
                name=name,
                mia_backend=cfg.mia_backend,
                progress=progress,
                **options,
            )
            for name in names
        }
    return {
        "forget": datamodule.forget_summary(),
        "seed": seed,
        "budget": budget,
        "rows": results,
        "chosen": {name: result["chosen"] for name, result in results.items()},
    }


def write_rows(chosen: Mapping[str, Any], path: str, note: str = "") -> Path:
    """Writes chosen rows as a compare ``methods`` mapping (YAML); rows already in the file and
    not re-tuned stay."""
    import yaml

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = yaml.safe_load(out.read_text())["methods"] if out.is_file() else {}
    rows.update(json.loads(json.dumps(dict(chosen))))
    header = "# Written by lightning-unlearn tune (oracle-free: no retrained model)" + (f"; {note}" if note else "") + ".\n"
    out.write_text(header + yaml.safe_dump({"methods": rows}, sort_keys=False))
    return out


def main(args: Optional[Sequence[str]] = None) -> None:
    """``lightning-unlearn tune``: parses the command line, runs :func:`tune_config`, prints the
    chosen rows and writes ``--output`` (every trial, JSON) and ``--write-rows`` (YAML)."""
    parser = argparse.ArgumentParser(
        prog="lightning-unlearn tune",
        description="Choose unlearning hyper-parameters on your model and request without a retrained model.",
    )
    parser.add_argument("--config", required=True, help="A compare config (data = your request, model, original).")
    parser.add_argument("--rows", nargs="+", default=None, help="Rows to tune (default: every non-Retrain row).")
    parser.add_argument("--budget", type=float, default=0.5, help="Per row, a fraction of one Retrain's time (default 0.5).")
    parser.add_argument("--weights", default=None, help="Weights of your trained model (else the config's original is trained).")
    parser.add_argument("--max-drop", type=float, default=1.0, help="Retain/test accuracy a trial may lose, points (default 1).")
    parser.add_argument("--output", default=None, help="Where to write every trial (JSON).")
    parser.add_argument("--write-rows", default=None, help="Where to write the chosen rows (compare YAML).")
    parser.add_argument("--no-progress", action="store_true", help="No progress bar.")
    ns = parser.parse_args(resolve_config_args(list(sys.argv[2:] if args is None else args)))
    try:
        result = tune_config(
            ns.config, ns.rows, budget=ns.budget, weights=ns.weights, max_drop=ns.max_drop, progress=not ns.no_progress
        )
    except ValueError as exc:
        parser.error(str(exc))
    for name, row in result["rows"].items():
        trial = row["chosen_trial"]
        print(
            f"{name}: {json.dumps(row['chosen'])}  score {trial['score']:.2f}"
            f"{'' if row['feasible'] else ' (no feasible trial)'}; {len(row['trials'])} trials,"
            f" {row['spent_s']:.0f} s of {row['budget_s']:.0f} s ({row['stopped']})",
            flush=True,
        )
    if ns.output:
        Path(ns.output).parent.mkdir(parents=True, exist_ok=True)
        Path(ns.output).write_text(json.dumps(json_safe(result), indent=2) + "\n")
        print(f"Wrote {ns.output}")
    if ns.write_rows:
        print(f"Wrote {write_rows(result['chosen'], ns.write_rows, f'from {ns.config}')}")
