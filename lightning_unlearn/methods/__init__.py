"""Unlearning methods: LightningModules wrapping the user's trained classifier."""

from lightning_unlearn.methods.acu import ACU
from lightning_unlearn.methods.adapt_then_unlearn import AdaptThenUnlearn
from lightning_unlearn.methods.bad_teacher import BadTeacher
from lightning_unlearn.methods.base import UnlearningMethod
from lightning_unlearn.methods.finetune import FineTune
from lightning_unlearn.methods.fisher_forgetting import FisherForgetting
from lightning_unlearn.methods.gradient_ascent import GradientAscent
from lightning_unlearn.methods.hamu import HAMU
from lightning_unlearn.methods.implicit_gradient_surgery import ImplicitGradientSurgery
from lightning_unlearn.methods.influence_unlearning import InfluenceUnlearning
from lightning_unlearn.methods.neggrad_plus import NegGradPlus
from lightning_unlearn.methods.npo import NPO
from lightning_unlearn.methods.one_shot import OneShotEdit
from lightning_unlearn.methods.oracle_matching import OracleMatching
from lightning_unlearn.methods.random_label import RandomLabel
from lightning_unlearn.methods.retrain import Retrain
from lightning_unlearn.methods.scrub import SCRUB
from lightning_unlearn.methods.ssd import LFSSD, SSD
from lightning_unlearn.methods.teachers import TeacherStudentMethod

__all__ = [
    "ACU",
    "HAMU",
    "LFSSD",
    "NPO",
    "SCRUB",
    "SSD",
    "AdaptThenUnlearn",
    "BadTeacher",
    "FineTune",
    "FisherForgetting",
    "GradientAscent",
    "ImplicitGradientSurgery",
    "InfluenceUnlearning",
    "NegGradPlus",
    "OneShotEdit",
    "OracleMatching",
    "RandomLabel",
    "Retrain",
    "TeacherStudentMethod",
    "UnlearningMethod",
]
