"""Callbacks acting on the parameters, gradients and evaluation of any LightningModule.

Each is a thin Lightning adapter over a pure-torch core of :mod:`lightning_unlearn.functional`;
the mask-holding ones share :class:`MaskedUpdateCallback` (and :class:`TopologyCallback` for
pruning and un-pruning).
"""

# Registration order (the registry lists entries in import order).
from lightning_unlearn.callbacks.dynamic_mask import DynamicMask
from lightning_unlearn.callbacks.evaluation import UnlearningEvaluation
from lightning_unlearn.callbacks.gradient_projection import GradientProjection
from lightning_unlearn.callbacks.hardness import UnlearningHardness
from lightning_unlearn.callbacks.keep_forgotten import KeepForgotten
from lightning_unlearn.callbacks.keep_topology import KeepTopology
from lightning_unlearn.callbacks.magnitude_pruning import MagnitudePruning
from lightning_unlearn.callbacks.masking import MaskedUpdateCallback, TopologyCallback
from lightning_unlearn.callbacks.parameter_repulsion import ParameterRepulsion
from lightning_unlearn.callbacks.saliency_mask import SaliencyMask
from lightning_unlearn.callbacks.sparsity_regularization import SparsityRegularization
from lightning_unlearn.callbacks.unpruning import UnPruning

__all__ = [
    "DynamicMask",
    "GradientProjection",
    "KeepForgotten",
    "KeepTopology",
    "MagnitudePruning",
    "MaskedUpdateCallback",
    "ParameterRepulsion",
    "SaliencyMask",
    "SparsityRegularization",
    "TopologyCallback",
    "UnPruning",
    "UnlearningEvaluation",
    "UnlearningHardness",
]
