"""A small ResNet (He et al., 2016) for 1-D signals and small images: a stem and three stages of basic
blocks, each stage after the first halving the resolution and doubling the width."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..errors import ModelLoadError
from ..layers import layers_for


class BasicBlock(nn.Module):
    """conv-BN-ReLU-conv-BN plus a shortcut (1×1 conv-BN when the shape changes), then ReLU."""

    def __init__(self, dims: int, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        conv, bn, _ = layers_for(dims)
        self.conv1 = conv(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = bn(out_channels)
        self.relu1 = nn.ReLU()
        self.conv2 = conv(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = bn(out_channels)
        self.has_shortcut_conv = stride != 1 or in_channels != out_channels
        if self.has_shortcut_conv:
            self.shortcut_conv = conv(in_channels, out_channels, 1, stride=stride, bias=False)
            self.shortcut_bn = bn(out_channels)
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu1(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        shortcut = self.shortcut_bn(self.shortcut_conv(x)) if self.has_shortcut_conv else x
        return self.relu2(y + shortcut)


class ResNetSmall(nn.Module):
    """Stem 3×3 conv-BN-ReLU, three stages of basic blocks (strides 1, 2, 2), global average pool, Linear.
    ``dims=1`` takes (B, C, L) signals, ``dims=2`` (B, C, H, W) images of ``input_size``."""

    def __init__(self, dims: int = 1, in_channels: int = 1, num_classes: int = 10, *, input_size: int = 40,
                 widths: Sequence[int] = (32, 64, 128), blocks_per_stage: Sequence[int] = (2, 2, 2)) -> None:
        super().__init__()
        conv, bn, global_pool = layers_for(dims)
        if len(widths) != 3 or len(blocks_per_stage) != 3:
            raise ModelLoadError(f"ResNetSmall has three stages: give 3 widths and 3 block counts, got {widths} "
                                 f"and {blocks_per_stage}")
        self.input_shape = (in_channels,) + (input_size,) * dims
        self.conv1 = conv(in_channels, widths[0], 3, padding=1, bias=False)
        self.bn1 = bn(widths[0])
        self.relu1 = nn.ReLU()
        stages = []
        channels = widths[0]
        for stage, (width, blocks) in enumerate(zip(widths, blocks_per_stage, strict=True)):
            stride = 1 if stage == 0 else 2
            stages.append(nn.Sequential(*(BasicBlock(dims, channels if i == 0 else width, width,
                                                     stride if i == 0 else 1) for i in range(blocks))))
            channels = width
        self.layer1, self.layer2, self.layer3 = stages
        self.pool = global_pool(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu1(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(self.flatten(self.pool(x)))

    def example_inputs(self, batch_size: int = 1) -> tuple[torch.Tensor, ...]:
        return (torch.randn(batch_size, *self.input_shape),)
