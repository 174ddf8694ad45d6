"""Functional unlearning metrics: plain functions over tensors, usable in any loop."""

from lightning_unlearn.metrics.functional.accuracy import classification_accuracy, unlearning_accuracy
from lightning_unlearn.metrics.functional.gap import avg_gap, metric_gaps
from lightning_unlearn.metrics.functional.mia import mia_efficacy, true_class_confidence
from lightning_unlearn.metrics.functional.topology import (
    gap_closed, load_masks, mask_iou, masks_of, resolve_topology, sparsity, topology_gap,
)
from lightning_unlearn.metrics.functional.zrf import jensen_shannon, zrf_score

__all__ = [
    "avg_gap",
    "classification_accuracy",
    "gap_closed",
    "jensen_shannon",
    "load_masks",
    "mask_iou",
    "masks_of",
    "metric_gaps",
    "mia_efficacy",
    "resolve_topology",
    "sparsity",
    "topology_gap",
    "true_class_confidence",
    "unlearning_accuracy",
    "zrf_score",
]
