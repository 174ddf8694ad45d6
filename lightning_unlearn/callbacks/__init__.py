"""Callbacks acting on the parameters, gradients and evaluation of any LightningModule."""

from lightning_unlearn.callbacks.evaluation import UnlearningEvaluation
from lightning_unlearn.callbacks.masking import MaskedParameters, MaskedUpdateCallback

__all__ = ["UnlearningEvaluation", "MaskedParameters", "MaskedUpdateCallback"]
