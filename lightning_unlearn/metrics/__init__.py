"""Unlearning metrics (OPTML convention, fractions in [0, 1]): accuracy, UA, MIA-Efficacy, ZRF,
sparse topology, and the audits of "is it really forgotten?" (membership attacks, per-example
population audits, representation probes); torchmetrics ``Metric``s with functional twins in
:mod:`lightning_unlearn.metrics.functional`."""

from lightning_unlearn.metrics import functional
from lightning_unlearn.metrics.accuracy import ClassificationAccuracy, UnlearningAccuracy
from lightning_unlearn.metrics.attacks import EntropyMIA, LossMIA, MembershipAudit, PerExampleMargins, ThresholdMIA
from lightning_unlearn.metrics.audit import (
    quantization_audit,
    relearn_audit,
    representation_audit,
    resolve_audits,
)
from lightning_unlearn.metrics.evaluation import EvaluationPass, evaluate, evaluate_loaders, evaluate_pass
from lightning_unlearn.metrics.keys import AUDIT_PRESETS, AUDITS, GAP_METRICS, METRICS
from lightning_unlearn.metrics.language import exact_match_extraction, greedy_continuation, perplexity
from lightning_unlearn.metrics.mia import MIAEfficacy
from lightning_unlearn.metrics.population import ChallengeScore, KLoM, ULiRA
from lightning_unlearn.metrics.relapse import relapse_deltas, relapse_metrics
from lightning_unlearn.metrics.representation import FeatureProbe, LinearCKA
from lightning_unlearn.metrics.topology import MaskIoU, Sparsity, topology_report
from lightning_unlearn.metrics.zrf import ZRFScore

__all__ = [
    "AUDITS",
    "AUDIT_PRESETS",
    "GAP_METRICS",
    "METRICS",
    "ChallengeScore",
    "ClassificationAccuracy",
    "EntropyMIA",
    "EvaluationPass",
    "FeatureProbe",
    "KLoM",
    "LinearCKA",
    "LossMIA",
    "MIAEfficacy",
    "MaskIoU",
    "MembershipAudit",
    "PerExampleMargins",
    "Sparsity",
    "ThresholdMIA",
    "ULiRA",
    "UnlearningAccuracy",
    "ZRFScore",
    "evaluate",
    "evaluate_loaders",
    "evaluate_pass",
    "exact_match_extraction",
    "functional",
    "greedy_continuation",
    "perplexity",
    "quantization_audit",
    "relapse_deltas",
    "relapse_metrics",
    "relearn_audit",
    "representation_audit",
    "resolve_audits",
    "topology_report",
]
