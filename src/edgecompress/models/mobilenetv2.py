"""MobileNetV2 (Sandler et al., 2018) scaled for 1-D signals of length 40 and 8×8 images: inverted residual
blocks with depthwise convolutions, ReLU6, and linear (activation-free) bottlenecks."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..layers import layers_for

# (expansion t, output channels c, repeats n, stride of the first repeat s), as in the paper's Table 2.
DEFAULT_SETTINGS: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 1), (6, 64, 3, 2), (6, 96, 2, 1))


def _make_divisible(channels: float, divisor: int = 8) -> int:
    """Round to a multiple of 8 (never below 90 % of the request): vector units like such widths."""
    rounded = max(divisor, int(channels + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * channels else rounded


class InvertedResidual(nn.Module):
    """1×1 expand-BN-ReLU6 → depthwise 3×3-BN-ReLU6 → 1×1 project-BN, plus the input when shapes allow."""

    def __init__(self, dims: int, in_channels: int, out_channels: int, stride: int, expansion: int) -> None:
        super().__init__()
        conv, bn, _ = layers_for(dims)
        hidden = in_channels * expansion
        self.has_expand = expansion != 1
        self.use_residual = stride == 1 and in_channels == out_channels
        if self.has_expand:
            self.expand_conv = conv(in_channels, hidden, 1, bias=False)
            self.expand_bn = bn(hidden)
            self.expand_act = nn.ReLU6()
        self.dw_conv = conv(hidden, hidden, 3, stride=stride, padding=1, groups=hidden, bias=False)
        self.dw_bn = bn(hidden)
        self.dw_act = nn.ReLU6()
        self.project_conv = conv(hidden, out_channels, 1, bias=False)
        self.project_bn = bn(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.expand_act(self.expand_bn(self.expand_conv(x))) if self.has_expand else x
        y = self.dw_act(self.dw_bn(self.dw_conv(y)))
        y = self.project_bn(self.project_conv(y))
        return x + y if self.use_residual else y


class MobileNetV2Small(nn.Module):
    """Stem 3×3 conv-BN-ReLU6, inverted residual blocks, 1×1 conv-BN-ReLU6 head, global average pool,
    Linear. ``dims=1`` takes (B, C, L) signals, ``dims=2`` (B, C, H, W) images of ``input_size``."""

    def __init__(self, dims: int = 1, in_channels: int = 1, num_classes: int = 10, width_mult: float = 1.0, *,
                 input_size: int = 40, stem_stride: int = 1, stem_channels: int = 32, head_channels: int = 320,
                 settings: Sequence[tuple[int, int, int, int]] = DEFAULT_SETTINGS) -> None:
        super().__init__()
        conv, bn, global_pool = layers_for(dims)
        self.input_shape = (in_channels,) + (input_size,) * dims
        channels = _make_divisible(stem_channels * width_mult)
        self.stem_conv = conv(in_channels, channels, 3, stride=stem_stride, padding=1, bias=False)
        self.stem_bn = bn(channels)
        self.stem_act = nn.ReLU6()
        blocks = []
        for expansion, out, repeats, stride in settings:
            out = _make_divisible(out * width_mult)
            for i in range(repeats):
                blocks.append(InvertedResidual(dims, channels, out, stride if i == 0 else 1, expansion))
                channels = out
        self.blocks = nn.Sequential(*blocks)
        head = _make_divisible(head_channels * max(1.0, width_mult))
        self.head_conv = conv(channels, head, 1, bias=False)
        self.head_bn = bn(head)
        self.head_act = nn.ReLU6()
        self.pool = global_pool(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(head, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem_act(self.stem_bn(self.stem_conv(x)))
        x = self.blocks(x)
        x = self.head_act(self.head_bn(self.head_conv(x)))
        return self.fc(self.flatten(self.pool(x)))

    def example_inputs(self, batch_size: int = 1) -> tuple[torch.Tensor, ...]:
        return (torch.randn(batch_size, *self.input_shape),)
