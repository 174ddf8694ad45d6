"""Frozen teachers for teacher-student unlearning (SCRUB, Bad Teacher) and the distillation KL."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn

from lightning_unlearn.methods.base import UnlearningMethod
from lightning_unlearn.models.network import copy_network


def frozen_copy(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` in eval mode with ``requires_grad=False`` everywhere."""
    teacher = copy_network(model).eval()
    teacher.requires_grad_(False)
    return teacher


def fingerprint_module(model: nn.Module) -> str:
    """SHA-256 over the names, dtypes, shapes and bytes of ``model.state_dict()``."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        data = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{data.dtype}:{tuple(data.shape)};".encode())
        digest.update(data.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def distillation_kl(student_logits: Tensor, target_probs: Tensor, temperature: float = 1.0) -> Tensor:
    """Per-sample ``KL(target || softmax(student_logits / T))``, summed over classes.

    Args:
        student_logits: ``(N, C)`` logits of the student (gradients flow through them).
        target_probs: ``(N, C)`` target distributions (e.g. ``softmax(teacher_logits / T)``).
        temperature: softmax temperature applied to the student logits.

    Returns:
        ``(N,)`` float32 tensor of KL divergences in nats (``0 * log 0`` counts as 0).
    """
    log_q = F.log_softmax(student_logits.float() / temperature, dim=1)
    return F.kl_div(log_q, target_probs.float(), reduction="none").sum(dim=1)


class TeacherStudentMethod(UnlearningMethod):
    """Base of the methods that distil the student (``self.model``) from frozen teachers.

    Teachers are registered with :meth:`add_teacher`: a frozen deep copy (eval mode,
    ``requires_grad=False``) that is kept OUT of the module tree, so it is never handed to the
    optimiser, never put in train mode by Lightning and never written to checkpoints (the
    constructor re-creates it from the same arguments when a run resumes). Device and dtype moves
    of the method (``.to()``, ``.half()``, Lightning's precision plugins) apply to the teachers too.
    Each teacher's SHA-256 fingerprint is stored in checkpoints; resuming with different teachers
    warns, because the run would then not continue the interrupted one.

    Arguments: see :class:`UnlearningMethod`.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._teachers: dict[str, nn.Module] = {}
        self._teacher_fingerprints: dict[str, str] = {}

    def add_teacher(self, name: str, model: nn.Module) -> nn.Module:
        """Registers a frozen deep copy of ``model`` as the teacher ``name`` and returns it."""
        teacher = frozen_copy(model)
        self._teachers[name] = teacher
        self._teacher_fingerprints[name] = fingerprint_module(teacher)
        return teacher

    @torch.no_grad()
    def teacher_logits(self, name: str, x: Tensor) -> Tensor:
        """Logits of the teacher ``name`` on ``x`` (no gradient, eval mode)."""
        return self._teachers[name](x)

    # ------------------------------------------------------------------ Lightning/torch plumbing
    def _apply(self, fn: Callable[[Tensor], Tensor], *args: Any, **kwargs: Any) -> TeacherStudentMethod:
        super()._apply(fn, *args, **kwargs)
        for teacher in getattr(self, "_teachers", {}).values():
            teacher._apply(fn, *args, **kwargs)
        return self

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["teacher_fingerprints"] = dict(self._teacher_fingerprints)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        saved = checkpoint.get("teacher_fingerprints", {})
        changed = sorted(name for name, digest in saved.items() if self._teacher_fingerprints.get(name) != digest)
        if changed:
            rank_zero_warn(
                f"{type(self).__name__}: the teacher(s) {changed} differ from those the checkpoint was trained with."
                " Teachers are not stored in checkpoints: build the method from the same original model and"
                " arguments (weights=..., seeds) to continue the same run."
            )
