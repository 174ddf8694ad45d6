"""lightning-unlearn: machine unlearning for PyTorch Lightning."""

from lightning_unlearn.data import ForgetSpec, UnlearningDataModule

__version__ = "0.1.0"
__all__ = ["ForgetSpec", "UnlearningDataModule", "__version__"]
