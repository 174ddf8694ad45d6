"""Unlearning metrics (OPTML convention, fractions in [0, 1]): accuracy, UA, MIA-Efficacy, ZRF,
sparse topology; torchmetrics ``Metric``s with functional twins in :mod:`lightning_unlearn.metrics.functional`."""

from lightning_unlearn.metrics import functional
from lightning_unlearn.metrics.accuracy import ClassificationAccuracy, UnlearningAccuracy
from lightning_unlearn.metrics.evaluation import evaluate, evaluate_loaders
from lightning_unlearn.metrics.keys import GAP_METRICS, METRICS
from lightning_unlearn.metrics.mia import MIAEfficacy
from lightning_unlearn.metrics.topology import MaskIoU, Sparsity, topology_report
from lightning_unlearn.metrics.zrf import ZRFScore

__all__ = [
    "ClassificationAccuracy",
    "GAP_METRICS",
    "METRICS",
    "MIAEfficacy",
    "MaskIoU",
    "Sparsity",
    "UnlearningAccuracy",
    "ZRFScore",
    "evaluate",
    "evaluate_loaders",
    "functional",
    "topology_report",
]
