"""Functional unlearning metrics: plain functions over tensors, usable in any loop."""

from lightning_unlearn.metrics.functional.accuracy import classification_accuracy, unlearning_accuracy
from lightning_unlearn.metrics.functional.attacks import (
    ATTACK_PAIRS,
    THRESHOLD_ATTACKS,
    attack_scores,
    entropy_mia,
    fit_logistic_regression,
    logit_margins,
    loss_mia,
    membership_audit,
    roc_auc,
    roc_curve,
    sample_statistics,
    threshold_attack,
    threshold_attacks,
    tpr_at_fpr,
)
from lightning_unlearn.metrics.functional.gap import avg_gap, metric_gaps
from lightning_unlearn.metrics.functional.mia import mia_efficacy, true_class_confidence
from lightning_unlearn.metrics.functional.population import challenge_score, epsilon_scores, klom, summarise, ulira
from lightning_unlearn.metrics.functional.representation import fit_linear_probe, knn_accuracy, linear_cka, linear_probe_accuracy
from lightning_unlearn.metrics.functional.topology import (
    gap_closed,
    load_masks,
    mask_iou,
    masks_of,
    resolve_topology,
    sparsity,
    topology_gap,
)
from lightning_unlearn.metrics.functional.zrf import jensen_shannon, zrf_score

__all__ = [
    "ATTACK_PAIRS",
    "THRESHOLD_ATTACKS",
    "attack_scores",
    "avg_gap",
    "challenge_score",
    "classification_accuracy",
    "entropy_mia",
    "epsilon_scores",
    "fit_linear_probe",
    "fit_logistic_regression",
    "gap_closed",
    "jensen_shannon",
    "klom",
    "knn_accuracy",
    "linear_cka",
    "linear_probe_accuracy",
    "load_masks",
    "logit_margins",
    "loss_mia",
    "mask_iou",
    "masks_of",
    "membership_audit",
    "metric_gaps",
    "mia_efficacy",
    "resolve_topology",
    "roc_auc",
    "roc_curve",
    "sample_statistics",
    "sparsity",
    "summarise",
    "threshold_attack",
    "threshold_attacks",
    "topology_gap",
    "tpr_at_fpr",
    "true_class_confidence",
    "ulira",
    "unlearning_accuracy",
    "zrf_score",
]
