"""A small convolutional classifier for 8x8 (digits) and 28x28 (MNIST-like) images."""

from __future__ import annotations

from torch import Tensor, nn

from lightning_unlearn.validation import check_int


class SmallCNN(nn.Module):
    """Three conv-BN-ReLU stages (the second and third downsample by 2), global average pooling
    and a linear head. About 30k parameters at ``width=16``; runs fast on a CPU.

    Args:
        in_channels: input image channels.
        num_classes: number of logits.
        width: channels of the first stage (doubled at each later stage).
        pool_size: side of the adaptive average pooling before the head (1 = global average
            pooling; 4 keeps a 4x4 layout, which shape-heavy 28x28 data such as Fashion-MNIST needs).

    Example::

        >>> import torch
        >>> SmallCNN(in_channels=1, num_classes=10)(torch.zeros(2, 1, 8, 8)).shape
        torch.Size([2, 10])
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10, width: int = 16, pool_size: int = 1) -> None:
        super().__init__()
        in_channels, num_classes, width, pool_size = (
            check_int(v, n, minimum=1, hint="a positive integer")
            for n, v in (("in_channels", in_channels), ("num_classes", num_classes), ("width", width), ("pool_size", pool_size))
        )

        def stage(c_in: int, c_out: int, stride: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()
            )

        self.features = nn.Sequential(
            stage(in_channels, width, 1),
            stage(width, 2 * width, 2),
            stage(2 * width, 4 * width, 2),
            nn.AdaptiveAvgPool2d(pool_size),
            nn.Flatten(),
        )
        self.classifier = nn.Linear(4 * width * pool_size**2, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))
