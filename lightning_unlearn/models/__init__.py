"""Reference networks and the LightningModule that trains the original model."""

from lightning_unlearn.models.classifier import ClassifierModule, ImageClassifier
from lightning_unlearn.models.cnn import SmallCNN
from lightning_unlearn.models.resnet import ResNet18
from lightning_unlearn.models.weights import load_weights

__all__ = ["ClassifierModule", "ImageClassifier", "ResNet18", "SmallCNN", "load_weights"]
