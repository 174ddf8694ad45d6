"""Reference networks, the LightningModule that trains the original model, and network utilities."""

from lightning_unlearn.models.classifier import ClassifierModule, ImageClassifier
from lightning_unlearn.models.cnn import SmallCNN
from lightning_unlearn.models.lenet import LeNet5, LeNet300100
from lightning_unlearn.models.network import buffers_restored, check_logits, copy_network, eval_mode, network_of, reinitialise
from lightning_unlearn.models.resnet import ResNet18
from lightning_unlearn.models.tiny_lm import TinyCausalLM
from lightning_unlearn.models.weights import export_weights, load_weights, read_state_dict, weights_sha256

__all__ = [
    "ClassifierModule",
    "ImageClassifier",
    "LeNet5",
    "LeNet300100",
    "ResNet18",
    "SmallCNN",
    "TinyCausalLM",
    "buffers_restored",
    "check_logits",
    "copy_network",
    "eval_mode",
    "export_weights",
    "load_weights",
    "network_of",
    "read_state_dict",
    "reinitialise",
    "weights_sha256",
]
