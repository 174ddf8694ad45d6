"""The audits that need more than the evaluation pass: representation (CKA, probes), relearning
and quantisation; and the names of the audits a user switches on.

Each function runs plain no-grad passes (the relearning attack a few SGD steps) over small,
deterministic subsets on the models' device and returns flat audit quantities (keys and their
meaning in :mod:`lightning_unlearn.metrics.keys`). They are what
:class:`~lightning_unlearn.callbacks.UnlearningEvaluation` calls at fit end with
``audits="full"``; they work on any ``nn.Module`` and any iterables of ``(x, y)`` batches.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Optional, Union

import torch
from torch import Tensor, nn

from lightning_unlearn.functional.features import feature_tap
from lightning_unlearn.functional.pruning import eval_mode
from lightning_unlearn.functional.quantization import quantize_weights
from lightning_unlearn.functional.relearn import relearn
from lightning_unlearn.metrics.evaluation import EvaluationPass, evaluate_pass
from lightning_unlearn.metrics.functional.mia import Backend
from lightning_unlearn.metrics.functional.representation import fit_linear_probe, knn_accuracy, linear_cka
from lightning_unlearn.metrics.keys import AUDIT_PRESETS, AUDITS, BEST_AUC

Batches = Iterable[tuple[Tensor, Tensor]]


def resolve_audits(audits: Union[str, Sequence[str], None]) -> tuple[str, ...]:
    """The audit names of ``audits``: ``None`` (none), a preset (``"standard"``, ``"full"``), an
    audit name, or a list mixing both; in the order of :data:`~lightning_unlearn.metrics.keys.AUDITS`.

    Raises:
        ValueError: an unknown name (the message lists the valid ones).

    Example:
        >>> resolve_audits(["standard", "plots"])
        ('attacks', 'margins', 'plots')
    """
    if audits is None:
        return ()
    items = [audits] if isinstance(audits, str) else list(audits) if isinstance(audits, (list, tuple)) else None
    if items is None:
        raise ValueError(f"`audits` must be None, a name or a list of names, got {audits!r}: e.g. audits='standard'.")
    chosen: set[str] = set()
    for item in items:
        if item in AUDIT_PRESETS:
            chosen.update(AUDIT_PRESETS[item])
        elif item in AUDITS:
            chosen.add(item)
        else:
            raise ValueError(
                f"`audits` has an unknown entry {item!r}: use a preset {tuple(AUDIT_PRESETS)} or audits from {AUDITS}."
            )
    return tuple(a for a in AUDITS if a in chosen)


# ------------------------------------------------------------------------------ representation
@torch.no_grad()
def features_of(
    model: nn.Module,
    batches: Batches,
    device: Union[str, torch.device],
    *,
    layer: Optional[str] = None,
    convert_input: Optional[Callable[[Any], Any]] = None,
) -> tuple[Tensor, Tensor]:
    """``(features, labels)`` of ``model`` (eval mode, features from ``layer``, see
    :mod:`lightning_unlearn.functional.features`) over ``batches``, float64 on ``device``."""
    feats, labels = [], []
    with eval_mode(model), feature_tap(model, layer) as read:
        for x, y in batches:
            x = convert_input(x) if convert_input is not None else x
            model(x.to(device))
            feats.append(read().double())
            labels.append(torch.as_tensor(y).to(device))
    if not feats:
        raise ValueError("no batch to read features from.")
    return torch.cat(feats), torch.cat(labels).long()


def representation_audit(
    models: Mapping[str, nn.Module],
    loaders: Mapping[str, Batches],
    device: Union[str, torch.device],
    *,
    layer: Optional[str] = None,
    convert_input: Optional[Callable[[Any], Any]] = None,
    k: int = 5,
) -> dict[str, dict[str, float]]:
    """CKA and probes on the penultimate features of several models on the same examples.

    Args:
        models: ``"after"`` (the unlearned model) and any of ``"reference"`` (Retrain),
            ``"original"``, ``"reseeded"`` (Retrain from other seeds), ``"before"`` (= original).
        loaders: ``"forget"`` and ``"test"`` (the CKA examples), ``"probe_train"`` (the probe's
            training examples: retained data, plus held-out data of every class) and
            ``"probe_test"`` (held-out examples not in ``probe_train``, for scale).
        device: where to run.
        layer: the feature layer (default: the penultimate one, see
            :func:`~lightning_unlearn.functional.features.resolve_feature_layer`).
        k: neighbours of the k-NN probe.

    Returns:
        Per model name: ``representation/cka_retrain/{forget,test}`` (CKA with ``"reference"``;
        with itself 1), ``representation/cka_original/{forget,test}`` (CKA with ``"original"``),
        ``representation/linear_probe/{forget,test}_acc`` and ``representation/knn/{forget,test}_acc``.
    """
    features = {
        name: {
            split: features_of(model, loaders[split], device, layer=layer, convert_input=convert_input)
            for split in ("forget", "test", "probe_train", "probe_test")
        }
        for name, model in models.items()
    }
    out: dict[str, dict[str, float]] = {}
    for name, feats in features.items():
        block: dict[str, float] = {}
        for other, key in (("reference", "cka_retrain"), ("original", "cka_original")):
            if other in features:
                for split in ("forget", "test"):
                    block[f"representation/{key}/{split}"] = float(linear_cka(feats[split][0], features[other][split][0]))
        train_x, train_y = feats["probe_train"]
        classes = int(max(int(train_y.max()), *(int(feats[s][1].max()) for s in ("forget", "probe_test")))) + 1
        predict = fit_linear_probe(train_x, train_y, num_classes=classes)
        for split, target in (("forget", "forget"), ("probe_test", "test")):
            x, y = feats[split]
            block[f"representation/linear_probe/{target}_acc"] = float((predict(x) == y.to(train_x.device)).double().mean())
            block[f"representation/knn/{target}_acc"] = float(knn_accuracy(train_x, train_y, x, y, k=min(k, train_x.shape[0])))
        out[name] = block
    return out


# ------------------------------------------------------------------------------------ relearning
@torch.no_grad()
def accuracy_on(
    model: nn.Module, batches: Batches, device: Union[str, torch.device], convert_input: Optional[Callable[[Any], Any]] = None
) -> float:
    """Top-1 accuracy of ``model`` (eval mode) over ``batches``."""
    correct = total = 0
    with eval_mode(model):
        for x, y in batches:
            x = convert_input(x) if convert_input is not None else x
            pred = model(x.to(device)).argmax(1)
            correct += int((pred == torch.as_tensor(y).to(device)).sum())
            total += int(torch.as_tensor(y).numel())
    if total == 0:
        raise ValueError("no example to measure accuracy on.")
    return correct / total


def relearn_audit(
    models: Mapping[str, nn.Module],
    attack_batches: Sequence[tuple[Tensor, Tensor]],
    held_out: Batches,
    device: Union[str, torch.device],
    *,
    steps: int = 10,
    lr: float = 0.01,
    momentum: float = 0.9,
    convert_input: Optional[Callable[[Any], Any]] = None,
) -> dict[str, dict[str, float]]:
    """The relearning attack on each model under identical conditions: a copy fine-tuned for
    ``steps`` SGD steps on ``attack_batches`` (a small part of the forget set, or retained data
    with a few forget examples), then its accuracy on the rest of the forget set (``held_out``).

    Returns:
        Per model: ``relearn/forget_acc`` (after the attack; **higher = remembered**: compare with
        the retrained model under the same attack) and ``relearn/forget_acc_before`` (the same
        examples, before the attack).
    """
    batches = [((convert_input(x) if convert_input is not None else x).to(device), y.to(device)) for x, y in attack_batches]
    held = list(held_out)
    out = {}
    for name, model in models.items():
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            attacked = relearn(model, batches, steps, lr=lr, momentum=momentum)
        out[name] = {
            "relearn/forget_acc_before": accuracy_on(model, held, device, convert_input),
            "relearn/forget_acc": accuracy_on(attacked, held, device, convert_input),
        }
        del attacked
    return out


# ---------------------------------------------------------------------------------- quantisation
def quantization_audit(
    model: nn.Module,
    float_pass: EvaluationPass,
    loaders: Mapping[str, Iterable],
    device: Union[str, torch.device],
    *,
    bits: Sequence[int] = (8, 4),
    mia_backend: Backend = "torch",
    distributed: bool = False,
    convert_input: Optional[Callable[[Any], Any]] = None,
    name: str = "model",
) -> dict[str, Any]:
    """Re-evaluates ``model`` with its conv/linear weights fake-quantised to each of ``bits``
    (per-channel symmetric round-to-nearest) and reports what changed against ``float_pass``
    (the full-precision evaluation of the same model).

    Returns:
        For each ``b`` (all **higher = remembered**): ``quantization/int<b>/forget_acc`` (so UA =
        1 - it), ``.../best_auc`` (forget-vs-test, best threshold attack), ``.../forget_acc_change``
        and ``.../best_auc_change`` (quantised - float: a rise means forgotten knowledge came
        back; UA changes by minus the forget-accuracy change) and ``.../mia_efficacy_drop`` (float
        - quantised MIA-efficacy).
    """
    out: dict[str, Any] = {}
    for b in bits:
        quantized = quantize_weights(model, bits=int(b))
        result = evaluate_pass(
            quantized,
            loaders,
            device,
            mia_backend,
            distributed=distributed,
            convert_input=convert_input,
            name=f"{name} (int{b})",
            strict=False,
        )
        del quantized
        prefix, after = f"quantization/int{b}", result.metrics
        best = (result.audit or {}).get(BEST_AUC)
        best_float = (float_pass.audit or {}).get(BEST_AUC)
        out[f"{prefix}/forget_acc"] = after.get("forget_acc")
        out[f"{prefix}/best_auc"] = best
        forget_acc, float_forget_acc = after.get("forget_acc"), float_pass.metrics.get("forget_acc")
        if forget_acc is not None and float_forget_acc is not None:
            out[f"{prefix}/forget_acc_change"] = forget_acc - float_forget_acc
        if best is not None and best_float is not None:
            out[f"{prefix}/best_auc_change"] = best - best_float
        mia, float_mia = after.get("mia_efficacy"), float_pass.metrics.get("mia_efficacy")
        if mia is not None and float_mia is not None:
            out[f"{prefix}/mia_efficacy_drop"] = float_mia - mia
    return out
