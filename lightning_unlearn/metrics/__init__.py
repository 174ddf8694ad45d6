"""Unlearning metrics (OPTML convention, fractions in [0, 1]): accuracy, UA, MIA-Efficacy, gaps."""

from lightning_unlearn.metrics import functional
from lightning_unlearn.metrics.accuracy import Accuracy, UnlearningAccuracy
from lightning_unlearn.metrics.mia import MIAEfficacy
from lightning_unlearn.metrics.zrf import ZRFScore
from lightning_unlearn.metrics.topology import MaskIoU, Sparsity, topology_report

__all__ = ["Accuracy", "MIAEfficacy", "UnlearningAccuracy", "functional", "ZRFScore"]
__all__ += ["MaskIoU", "Sparsity", "topology_report"]
