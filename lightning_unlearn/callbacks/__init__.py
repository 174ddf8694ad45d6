"""Callbacks acting on the parameters, gradients and evaluation of any LightningModule."""

from lightning_unlearn.callbacks.evaluation import UnlearningEvaluation

__all__ = ["UnlearningEvaluation"]
