"""scikit-learn's digits (1,797 8x8 images, 10 classes): the embedded default, no download."""

from __future__ import annotations

from typing import Optional

import torch
from torch.utils.data import Dataset, TensorDataset

from lightning_unlearn.data.datamodule import UnlearningDataModule
from lightning_unlearn.data.spec import ForgetSpec
from lightning_unlearn.validation import check_fraction, check_int


class DigitsDataModule(UnlearningDataModule):
    """scikit-learn's handwritten digits as an unlearning problem.

    Images are ``(1, 8, 8)`` float tensors scaled to [0, 1]; a stratified train/test split is
    drawn once by ``split_seed``. The data ships inside scikit-learn: nothing is downloaded.

    Args:
        forget: the deletion request, e.g. ``ForgetSpec(classes=[3])`` or ``ForgetSpec(ratio=0.1)``.
        batch_size: see :class:`UnlearningDataModule`.
        forget_batch_size: see :class:`UnlearningDataModule`.
        eval_batch_size: see :class:`UnlearningDataModule`.
        num_workers: see :class:`UnlearningDataModule`.
        shuffle_seed: see :class:`UnlearningDataModule`.
        test_fraction: fraction of the 1,797 images held out as the test set.
        split_seed: seed of the stratified train/test split.

    Example::

        >>> dm = DigitsDataModule(forget=ForgetSpec(classes=[3]))
        >>> len(dm.forget_indices) + len(dm.retain_indices)
        1437
    """

    def __init__(
        self,
        forget: ForgetSpec,
        batch_size: int = 64,
        forget_batch_size: Optional[int] = None,
        eval_batch_size: Optional[int] = 512,
        num_workers: int = 0,
        shuffle_seed: int = 0,
        test_fraction: float = 0.2,
        split_seed: int = 0,
    ) -> None:
        self.test_fraction = check_fraction(test_fraction, "test_fraction", allow_one=False, hint="e.g. 0.2 for 20 % held out")
        self.split_seed = check_int(split_seed, "split_seed", hint="the seed of the train/test split, e.g. 0")
        super().__init__(
            forget=forget,
            batch_size=batch_size,
            forget_batch_size=forget_batch_size,
            eval_batch_size=eval_batch_size,
            num_workers=num_workers,
            shuffle_seed=shuffle_seed,
        )
        self._ensure_loaded()

    def load_datasets(self) -> tuple[Dataset, Dataset, None, None]:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        digits = load_digits()
        x = torch.tensor(digits.data, dtype=torch.float32).reshape(-1, 1, 8, 8) / 16.0
        y = torch.tensor(digits.target, dtype=torch.long)
        train_idx, test_idx = train_test_split(
            torch.arange(len(y)).numpy(), test_size=self.test_fraction, stratify=y.numpy(), random_state=self.split_seed
        )
        train_idx, test_idx = torch.as_tensor(train_idx), torch.as_tensor(test_idx)
        return TensorDataset(x[train_idx], y[train_idx]), TensorDataset(x[test_idx], y[test_idx]), None, None
