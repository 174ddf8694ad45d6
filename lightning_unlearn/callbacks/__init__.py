"""Callbacks acting on the parameters, gradients and evaluation of any LightningModule."""

from lightning_unlearn.callbacks.evaluation import UnlearningEvaluation
from lightning_unlearn.callbacks.masking import MaskedParameters, MaskedUpdateCallback
from lightning_unlearn.callbacks.saliency_mask import SaliencyMask
from lightning_unlearn.callbacks.dynamic_mask import DynamicMask
from lightning_unlearn.callbacks.sparsity_regularization import SparsityRegularization
from lightning_unlearn.callbacks.gradient_projection import GradientProjection
from lightning_unlearn.callbacks.magnitude_pruning import MagnitudePruning
from lightning_unlearn.callbacks.unpruning import UnPruning

__all__ = ["UnlearningEvaluation", "MaskedParameters", "MaskedUpdateCallback", "SaliencyMask", "DynamicMask", "SparsityRegularization", "GradientProjection"]
__all__ += ["MagnitudePruning", "UnPruning"]
