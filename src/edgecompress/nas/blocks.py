"""Efficient blocks (N1) for 1-D signals and 2-D images: depthwise-separable convolution (MobileNetV1),
the inverted residual with a linear bottleneck (MobileNetV2), squeeze-excitation, and MBConv (EfficientNet:
an inverted residual with squeeze-excitation and SiLU).

Standalone on purpose: the reference MobileNetV2 in ``models`` fixes ReLU6 and has no squeeze-excitation, and
techniques do not import the reference models."""

from __future__ import annotations

import torch
from torch import nn

from ..errors import RecipeError
from ..layers import layers_for

ACTIVATIONS = {"relu": nn.ReLU, "relu6": nn.ReLU6, "hardswish": nn.Hardswish, "silu": nn.SiLU}
GATES = {"sigmoid": nn.Sigmoid, "hardsigmoid": nn.Hardsigmoid}


def make_activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise RecipeError(f"unknown activation {name!r}; allowed: {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


def check_count(name: str, value: object, *, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise RecipeError(f"{name} {value!r} is not allowed; allowed: a whole number >= {minimum}")
    return value


def _check_kernel(kernel_size: object) -> int:
    check_count("kernel_size", kernel_size)
    if kernel_size % 2 == 0:
        raise RecipeError(f"kernel_size {kernel_size} is not allowed; allowed: an odd whole number (same padding)")
    return kernel_size


class ConvBNAct(nn.Sequential):
    """Conv (no bias: the batch norm has one) → batch norm → activation (none when ``activation`` is None)."""

    def __init__(self, dims: int, in_channels: int, out_channels: int, kernel_size: int = 1, *, stride: int = 1,
                 groups: int = 1, activation: str | None = "relu6") -> None:
        conv, bn, _ = layers_for(dims)
        layers: list[nn.Module] = [conv(in_channels, out_channels, kernel_size, stride=stride,
                                        padding=kernel_size // 2, groups=groups, bias=False), bn(out_channels)]
        if activation is not None:
            layers.append(make_activation(activation))
        super().__init__(*layers)


class SqueezeExcite(nn.Module):
    """Channel attention (Hu et al., 2018): global average pool → 1×1 reduce → activation → 1×1 expand → gate,
    which rescales each channel of the input."""

    def __init__(self, channels: int, reduced_channels: int, *, dims: int = 1, activation: str = "relu",
                 gate: str = "sigmoid") -> None:
        super().__init__()
        conv, _, pool = layers_for(dims)
        check_count("channels", channels)
        check_count("reduced_channels", reduced_channels)
        if gate not in GATES:
            raise RecipeError(f"unknown squeeze-excitation gate {gate!r}; allowed: {', '.join(GATES)}")
        self.pool = pool(1)
        self.reduce = conv(channels, reduced_channels, 1)
        self.act = make_activation(activation)
        self.expand = conv(reduced_channels, channels, 1)
        self.gate = GATES[gate]()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(self.expand(self.act(self.reduce(self.pool(x)))))


class DepthwiseSeparable(nn.Module):
    """MobileNetV1's block: depthwise k×k conv-BN-act, then pointwise 1×1 conv-BN-act. It costs
    C_in·k + C_in·C_out multiplies per output position instead of C_in·C_out·k for a full conv."""

    def __init__(self, in_channels: int, out_channels: int, *, kernel_size: int = 3, stride: int = 1,
                 dims: int = 1, activation: str = "relu6") -> None:
        super().__init__()
        check_count("in_channels", in_channels)
        check_count("out_channels", out_channels)
        check_count("stride", stride)
        _check_kernel(kernel_size)
        self.depthwise = ConvBNAct(dims, in_channels, in_channels, kernel_size, stride=stride, groups=in_channels,
                                   activation=activation)
        self.pointwise = ConvBNAct(dims, in_channels, out_channels, 1, activation=activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


class InvertedResidual(nn.Module):
    """MobileNetV2's block: 1×1 expand-BN-act (skipped when ``expand_ratio`` is 1) → depthwise k×k-BN-act →
    optional squeeze-excitation → 1×1 project-BN with no activation (the linear bottleneck), plus the input
    when the stride is 1 and the channel counts match.

    ``se_ratio`` > 0 adds squeeze-excitation on the expanded channels, reduced to
    max(1, int(in_channels × se_ratio)) as in EfficientNet."""

    def __init__(self, in_channels: int, out_channels: int, *, stride: int = 1, expand_ratio: int = 6,
                 kernel_size: int = 3, dims: int = 1, activation: str = "relu6", se_ratio: float = 0.0) -> None:
        super().__init__()
        check_count("in_channels", in_channels)
        check_count("out_channels", out_channels)
        check_count("stride", stride)
        check_count("expand_ratio", expand_ratio)
        _check_kernel(kernel_size)
        if isinstance(se_ratio, bool) or not isinstance(se_ratio, int | float) or not 0.0 <= se_ratio <= 1.0:
            raise RecipeError(f"se_ratio {se_ratio!r} is out of range; allowed: a number with 0 <= se_ratio <= 1 "
                              "(0: no squeeze-excitation)")
        hidden = in_channels * expand_ratio
        self.use_residual = stride == 1 and in_channels == out_channels
        self.expand = (ConvBNAct(dims, in_channels, hidden, 1, activation=activation) if expand_ratio != 1
                       else nn.Identity())
        self.depthwise = ConvBNAct(dims, hidden, hidden, kernel_size, stride=stride, groups=hidden,
                                   activation=activation)
        self.se = (SqueezeExcite(hidden, max(1, int(in_channels * se_ratio)), dims=dims, activation=activation)
                   if se_ratio > 0 else nn.Identity())
        self.project = ConvBNAct(dims, hidden, out_channels, 1, activation=None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.se(self.depthwise(self.expand(x))))
        return x + y if self.use_residual else y


class MBConv(InvertedResidual):
    """EfficientNet's MBConv: an inverted residual with squeeze-excitation (se_ratio 0.25) and SiLU by
    default. (Stochastic depth, a training regulariser, is not included.)"""

    def __init__(self, in_channels: int, out_channels: int, *, stride: int = 1, expand_ratio: int = 6,
                 kernel_size: int = 3, dims: int = 1, activation: str = "silu", se_ratio: float = 0.25) -> None:
        super().__init__(in_channels, out_channels, stride=stride, expand_ratio=expand_ratio,
                         kernel_size=kernel_size, dims=dims, activation=activation, se_ratio=se_ratio)
