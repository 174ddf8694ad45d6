"""lightning-unlearn: machine unlearning for PyTorch Lightning."""

__version__ = "0.1.0"
