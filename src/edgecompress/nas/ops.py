"""The candidate operations of the DARTS search space (Liu et al., 2019), for 1-D signals (B, C, L).

Every operation maps C channels to C channels; with stride 2 the length L becomes ceil(L / 2) for all of them,
so that a node can sum any mix of them. Batch norms are affine in the derived network and not in the search
network (as in DARTS: a learnt scale would blur the comparison between operations)."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import RecipeError


class Zero(nn.Module):
    """The 'none' operation: no edge. Only in the search network; derivation drops it."""

    def __init__(self, stride: int) -> None:
        super().__init__()
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[..., ::self.stride].mul(0.0)


class ReLUConvBN(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, kernel_size: int, stride: int, padding: int, affine: bool) -> None:
        super().__init__(nn.ReLU(), nn.Conv1d(c_in, c_out, kernel_size, stride=stride, padding=padding, bias=False),
                         nn.BatchNorm1d(c_out, affine=affine))


class DilConv(nn.Sequential):
    """ReLU → depthwise conv (dilated) → pointwise 1×1 → BN."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, stride: int, padding: int, dilation: int,
                 affine: bool) -> None:
        super().__init__(nn.ReLU(),
                         nn.Conv1d(c_in, c_in, kernel_size, stride=stride, padding=padding, dilation=dilation,
                                   groups=c_in, bias=False),
                         nn.Conv1d(c_in, c_out, 1, bias=False), nn.BatchNorm1d(c_out, affine=affine))


class SepConv(nn.Sequential):
    """Two depthwise-separable convolutions back to back (the first strided), as in DARTS."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, stride: int, padding: int, affine: bool) -> None:
        super().__init__(DilConv(c_in, c_in, kernel_size, stride, padding, 1, affine),
                         DilConv(c_in, c_out, kernel_size, 1, padding, 1, affine))


class FactorizedReduce(nn.Module):
    """Halve the length with two 1×1 stride-2 convs, one shifted by a sample, concatenated: a skip connection
    that sees every input sample."""

    def __init__(self, c_in: int, c_out: int, affine: bool) -> None:
        super().__init__()
        self.relu = nn.ReLU()
        self.conv_1 = nn.Conv1d(c_in, c_out // 2, 1, stride=2, bias=False)
        self.conv_2 = nn.Conv1d(c_in, c_out - c_out // 2, 1, stride=2, bias=False)
        self.bn = nn.BatchNorm1d(c_out, affine=affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(x)
        shifted = F.pad(x[..., 1:], (0, 1))  # same output length as conv_1 for odd and even lengths
        return self.bn(torch.cat([self.conv_1(x), self.conv_2(shifted)], dim=1))


class PoolBN(nn.Sequential):
    """Max or average pooling (3 wide); the search network follows it with a non-affine BN, as DARTS does."""

    def __init__(self, kind: str, channels: int, stride: int, with_bn: bool) -> None:
        pool = (nn.MaxPool1d(3, stride=stride, padding=1) if kind == "max"
                else nn.AvgPool1d(3, stride=stride, padding=1, count_include_pad=False))
        super().__init__(pool, *([nn.BatchNorm1d(channels, affine=False)] if with_bn else []))


OpFactory = Callable[[int, int, bool], nn.Module]  # (channels, stride, affine) → module

OPERATIONS: dict[str, OpFactory] = {
    "none": lambda c, stride, affine: Zero(stride),
    "skip_connect": lambda c, stride, affine: nn.Identity() if stride == 1 else FactorizedReduce(c, c, affine),
    "max_pool_3": lambda c, stride, affine: PoolBN("max", c, stride, not affine),
    "avg_pool_3": lambda c, stride, affine: PoolBN("avg", c, stride, not affine),
    "sep_conv_3": lambda c, stride, affine: SepConv(c, c, 3, stride, 1, affine),
    "sep_conv_5": lambda c, stride, affine: SepConv(c, c, 5, stride, 2, affine),
    "dil_conv_3": lambda c, stride, affine: DilConv(c, c, 3, stride, 2, 2, affine),
    "dil_conv_5": lambda c, stride, affine: DilConv(c, c, 5, stride, 4, 2, affine),
}
DEFAULT_OPS = ("none", "skip_connect", "max_pool_3", "avg_pool_3", "sep_conv_3", "sep_conv_5", "dil_conv_3")


def check_ops(ops: tuple[str, ...]) -> tuple[str, ...]:
    if isinstance(ops, str) or not isinstance(ops, tuple | list):
        raise RecipeError(f"ops must be a list of operation names, got {type(ops).__name__}")
    unknown = [op for op in ops if op not in OPERATIONS]
    if unknown:
        raise RecipeError(f"unknown operations {unknown}; allowed: {', '.join(OPERATIONS)}")
    if len(set(ops)) != len(ops):
        raise RecipeError(f"ops lists an operation twice: {list(ops)}")
    if not [op for op in ops if op != "none"]:
        raise RecipeError(f"ops {list(ops)} has no operation besides 'none'; a derived edge needs one")
    return tuple(ops)


def make_op(name: str, channels: int, stride: int, affine: bool) -> nn.Module:
    return OPERATIONS[name](channels, stride, affine)
