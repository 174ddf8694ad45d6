"""The ``recipe`` of a report: what was run, read back from the trainer as it ran.

Every value comes from the objects in force — the optimiser and scheduler the trainer built (a
LightningCLI ``--optimizer=Adam`` shows as Adam, whatever the method's ``lr`` argument says), the
callbacks on the trainer in order, the precision, accumulation, clipping and strategy actually
used — never from what a constructor was meant to do.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Iterable, Mapping
from typing import Any, Optional

import lightning as L
import torch
from torch import Tensor, nn

from lightning_unlearn import registry
from lightning_unlearn.report.core import json_safe

__all__ = [
    "callbacks_recipe",
    "class_path",
    "data_recipe",
    "init_args",
    "method_recipe",
    "model_recipe",
    "optimizers_recipe",
    "redact_indices",
    "schedulers_recipe",
    "trainer_recipe",
]

#: Tensors and sequences longer than this are summarised (shape/length), never listed.
_MAX_ITEMS = 32


def class_path(obj: Any) -> str:
    """The shortest import path of ``obj``'s class (of ``obj`` itself when it is a class) among its
    already imported parent packages: ``lightning_unlearn.methods.RandomLabel``,
    ``torch.optim.SGD``, ``lightning.pytorch.callbacks.ModelCheckpoint``."""
    cls = obj if isinstance(obj, type) else type(obj)
    parts = cls.__module__.split(".")
    for end in range(1, len(parts)):
        package = sys.modules.get(".".join(parts[:end]))
        if package is not None and getattr(package, cls.__name__, None) is cls:
            return f"{package.__name__}.{cls.__qualname__}"
    return f"{cls.__module__}.{cls.__qualname__}"


def redact_indices(value: Any) -> Any:
    """``value`` with every ``indices`` entry that lists positions replaced by ``"<N indices>"``
    (as :meth:`ForgetSpec.to_dict` does): a report never carries the index list, also not through
    an embedded configuration (``data.init_args.forget.indices``)."""
    if isinstance(value, Mapping):
        return {
            k: (f"<{len(v)} indices>" if k == "indices" and isinstance(v, (list, tuple, Tensor)) else redact_indices(v))
            for k, v in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [redact_indices(v) for v in value]
    return value


def _registry_names() -> dict[type, str]:
    return {entry.cls: entry.name for entry in registry.entries()}


def compact(value: Any) -> Any:
    """:func:`~lightning_unlearn.report.core.json_safe`, with large tensors and long sequences
    summarised (a recipe names what was run; it never carries data)."""
    if isinstance(value, Tensor):
        if value.numel() > _MAX_ITEMS:
            return f"<tensor shape={list(value.shape)} dtype={str(value.dtype).replace('torch.', '')}>"
        return json_safe(value)
    if isinstance(value, nn.Module):
        return class_path(value)
    if isinstance(value, Mapping):
        return {str(k): compact(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        if len(value) > _MAX_ITEMS:
            return f"<{type(value).__name__} of {len(value)} items>"
        return [compact(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return json_safe(value)
    if isinstance(value, type):
        return class_path(value)
    if callable(value) and hasattr(value, "__qualname__"):
        return json_safe(value)
    if hasattr(value, "tolist") or hasattr(value, "item"):
        return json_safe(value)
    return class_path(value) if type(value).__module__ not in ("builtins",) else json_safe(value)


def init_args(obj: Any) -> dict[str, Any]:
    """The constructor arguments of ``obj`` read back from its public attributes of the same
    names (arguments it does not keep under their name are left out)."""
    try:
        parameters = registry.init_parameters(type(obj))
    except (TypeError, ValueError):
        return {}
    out = {}
    for name, parameter in parameters.items():
        if parameter.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD) or name.startswith("_"):
            continue
        try:
            value = getattr(obj, name)
        except Exception:  # a property that cannot answer now
            continue
        if inspect.ismethod(value):  # a method sharing the argument's name, not its value
            continue
        out[name] = compact(value)
    return out


def method_recipe(pl_module: L.LightningModule) -> dict[str, Any]:
    """``{"name", "class", "hyperparameters"}`` of the LightningModule that ran (``name``: its
    registry name, ``None`` for a user's own module)."""
    hparams = dict(getattr(pl_module, "hparams", {}) or {})
    return {
        "name": _registry_names().get(type(pl_module)),
        "class": class_path(pl_module),
        "hyperparameters": compact({k: v for k, v in hparams.items() if not str(k).startswith("_")}),
    }


def callbacks_recipe(callbacks: Iterable[L.Callback]) -> list[dict[str, Any]]:
    """Every callback in trainer order: ``{"name" (registry name or None), "class", "init_args"}``."""
    names = _registry_names()
    return [{"name": names.get(type(cb)), "class": class_path(cb), "init_args": init_args(cb)} for cb in callbacks]


def optimizers_recipe(trainer: L.Trainer) -> list[dict[str, Any]]:
    """The optimisers the trainer built, with every hyper-parameter of every parameter group as
    it stands (read before the first step: the configured values); none for a fit without one."""
    out = []
    for optimizer in trainer.optimizers:
        if not optimizer.param_groups:  # Lightning's stand-in when `configure_optimizers` returns None
            continue
        groups = []
        for group in optimizer.param_groups:
            settings = {k: compact(v) for k, v in group.items() if k != "params"}
            settings["parameters"] = int(sum(p.numel() for p in group["params"]))
            groups.append(settings)
        out.append({"class": class_path(optimizer), "param_groups": groups})
    return out


def schedulers_recipe(trainer: L.Trainer) -> list[dict[str, Any]]:
    """The LR schedulers the trainer built: class, interval, frequency and settings."""
    out = []
    for config in trainer.lr_scheduler_configs:
        scheduler = config.scheduler
        try:
            state = scheduler.state_dict()
        except Exception:
            state = {}
        settings = {k: compact(v) for k, v in state.items() if not k.startswith("_") and k not in ("optimizer",)}
        out.append(
            {
                "class": class_path(scheduler),
                "interval": config.interval,
                "frequency": config.frequency,
                "monitor": config.monitor,
                "settings": settings,
            }
        )
    return out


def trainer_recipe(trainer: L.Trainer) -> dict[str, Any]:
    """The trainer settings actually in force, and how far the fit went."""
    strategy = trainer.strategy
    return {
        "max_epochs": trainer.max_epochs,
        "max_steps": trainer.max_steps,
        "min_epochs": trainer.min_epochs,
        "min_steps": trainer.min_steps,
        "limit_train_batches": compact(trainer.limit_train_batches),
        "epochs_run": int(trainer.current_epoch),
        "steps_run": int(trainer.global_step),
        "precision": str(trainer.precision),
        "accumulate_grad_batches": int(trainer.accumulate_grad_batches),
        "gradient_clip_val": compact(trainer.gradient_clip_val),
        "gradient_clip_algorithm": compact(trainer.gradient_clip_algorithm),
        "strategy": type(strategy).__name__,
        "world_size": int(trainer.world_size),
        "num_nodes": int(trainer.num_nodes),
        "devices_per_node": int(trainer.num_devices),
        "accelerator": strategy.root_device.type,
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "resumed_from": None if trainer.ckpt_path is None else str(trainer.ckpt_path),
    }


def data_recipe(datamodule: Any) -> dict[str, Any]:
    """The data of a fit (an :class:`~lightning_unlearn.data.UnlearningDataModule`): class,
    batch sizes, |D_f|, |D_r|, |D_t|, the request and its fingerprint."""
    return {
        "class": class_path(datamodule),
        "batch_size": datamodule.batch_size,
        "forget_batch_size": datamodule.forget_batch_size,
        "eval_batch_size": datamodule.eval_batch_size,
        "num_workers": datamodule.num_workers,
        "shuffle_seed": datamodule.shuffle_seed,
        "forget_count": len(datamodule.forget_indices),
        "retain_count": len(datamodule.retain_indices),
        "test_count": len(datamodule.test_set),
        "spec": datamodule.forget.to_dict(),
        "fingerprint": datamodule.fingerprint,
    }


def model_recipe(network: nn.Module, sha256_before: Optional[str], sha256_after: Optional[str]) -> dict[str, Any]:
    """The network: class, parameter counts, dtype and the SHA-256 of its weights before and after
    (:func:`~lightning_unlearn.models.weights_sha256`)."""
    params = list(network.parameters())
    return {
        "class": class_path(network),
        "parameters": int(sum(p.numel() for p in params)),
        "trainable_parameters": int(sum(p.numel() for p in params if p.requires_grad)),
        "dtype": str(params[0].dtype).replace("torch.", "") if params else None,
        "sha256_before": sha256_before,
        "sha256_after": sha256_after,
    }
