"""A plain user LightningModule (not one of our wrappers) for callback tests."""

import lightning as L
import torch
from torch import nn

from tests.conftest import synthetic_dataset


class Tiny(nn.Module):
    """Linear -> BatchNorm -> ReLU -> Linear on 6 features, 4 classes."""

    def __init__(self, hidden: int = 5) -> None:
        super().__init__()
        self.fc1 = nn.Linear(6, hidden)
        self.bn = nn.BatchNorm1d(hidden)
        self.fc2 = nn.Linear(hidden, 4)

    def forward(self, x):
        return self.fc2(torch.relu(self.bn(self.fc1(x))))


class UserModule(L.LightningModule):
    """SGD (momentum 0.9, weight decay 5e-4) on 64 synthetic examples, 4 batches an epoch; its
    parameters are its own (names ``net.*``), it has no ``model`` attribute."""

    def __init__(self, lr=0.1, momentum=0.9, weight_decay=5e-4, seed=0, hidden=5) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.net = Tiny(hidden)
        self.lr, self.momentum, self.weight_decay = lr, momentum, weight_decay

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay)

    def train_dataloader(self):
        return torch.utils.data.DataLoader(synthetic_dataset(64), batch_size=16, shuffle=False)


def forget_loader(n=24, batch_size=8):
    """Forget batches for the saliency of a UserModule."""
    return torch.utils.data.DataLoader(synthetic_dataset(n, seed=1), batch_size=batch_size, shuffle=False)
