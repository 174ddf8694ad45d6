"""Deletion requests and the datamodules that serve them."""

from lightning_unlearn.data.datamodule import UnlearningDataModule, WrappedDataModule, dataset_targets
from lightning_unlearn.data.digits import DigitsDataModule
from lightning_unlearn.data.fashion_mnist import FashionMNISTDataModule
from lightning_unlearn.data.requests import resolve_requests
from lightning_unlearn.data.spec import ForgetSpec, fingerprint
from lightning_unlearn.data.text import SecretTextDataModule

__all__ = [
    "DigitsDataModule",
    "FashionMNISTDataModule",
    "ForgetSpec",
    "SecretTextDataModule",
    "UnlearningDataModule",
    "WrappedDataModule",
    "dataset_targets",
    "fingerprint",
    "resolve_requests",
]
