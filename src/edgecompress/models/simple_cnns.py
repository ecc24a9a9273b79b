"""The two small CNNs: the MNIST-1D paper's ConvBase and a conv-BN net for the 8×8 digits."""

from __future__ import annotations

import torch
from torch import nn


class Mnist1dCNN(nn.Module):
    """ConvBase from the MNIST-1D paper (Greydanus, 2020): three strided Conv1d-ReLU, flatten, Linear;
    input (B, 1, 40)."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(1, 25, 5, stride=2, padding=1)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv1d(25, 25, 3, stride=2, padding=1)
        self.relu2 = nn.ReLU()
        self.conv3 = nn.Conv1d(25, 25, 3, stride=2, padding=1)
        self.relu3 = nn.ReLU()
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(125, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu1(self.conv1(x))
        x = self.relu2(self.conv2(x))
        x = self.relu3(self.conv3(x))
        return self.fc(self.flatten(x))

    def example_inputs(self, batch_size: int = 1) -> tuple[torch.Tensor, ...]:
        return (torch.randn(batch_size, 1, 40),)


class DigitsCNN(nn.Module):
    """Three 3×3 Conv2d-BN-ReLU with a max pool after the second, global average pool, Linear;
    input (B, 1, 8, 8)."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(32)
        self.relu2 = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.conv3 = nn.Conv2d(32, 64, 3, padding=1)
        self.bn3 = nn.BatchNorm2d(64)
        self.relu3 = nn.ReLU()
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu1(self.bn1(self.conv1(x)))
        x = self.pool(self.relu2(self.bn2(self.conv2(x))))
        x = self.relu3(self.bn3(self.conv3(x)))
        return self.fc(self.flatten(self.gap(x)))

    def example_inputs(self, batch_size: int = 1) -> tuple[torch.Tensor, ...]:
        return (torch.randn(batch_size, 1, 8, 8),)
