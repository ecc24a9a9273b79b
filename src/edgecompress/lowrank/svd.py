"""Truncated SVD of a Linear or 1×1 convolution into two smaller layers: W ≈ (U_r √S_r)(√S_r V_r^T).

Splitting √S over both factors keeps their scales alike, which suits fine-tuning and later quantization."""

from __future__ import annotations

import torch
from torch import nn


def matrix_of(layer: nn.Linear | nn.Conv1d | nn.Conv2d) -> torch.Tensor:
    """The (out, in) matrix of a Linear or of a 1×1, ungrouped convolution."""
    return layer.weight.detach().reshape(layer.weight.shape[0], -1)


def svd_params(out_features: int, in_features: int, rank: int, bias: bool) -> int:
    """Parameters of the two-layer factorization at ``rank``."""
    return rank * (in_features + out_features) + (out_features if bias else 0)


def svd_factors(matrix: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(first (rank, in), second (out, rank)) with second @ first the best rank-``rank`` approximation of
    ``matrix`` (computed in float64, returned in float64)."""
    u, s, vh = torch.linalg.svd(matrix.double(), full_matrices=False)
    root = s[:rank].sqrt()
    return root[:, None] * vh[:rank], u[:, :rank] * root[None, :]


def svd_module(layer: nn.Linear | nn.Conv1d | nn.Conv2d, rank: int
               ) -> tuple[nn.Sequential, torch.Tensor]:
    """(Sequential of the two layers that replace ``layer``, the (out, in) matrix they compute). A convolution keeps
    its stride, padding and dilation in the first 1×1 conv (it has no bias, so padded zeros stay zero)."""
    first_w, second_w = svd_factors(matrix_of(layer), rank)
    kw = {"device": layer.weight.device, "dtype": layer.weight.dtype}
    has_bias = layer.bias is not None
    if isinstance(layer, nn.Linear):
        first = nn.Linear(layer.in_features, rank, bias=False, **kw)
        second = nn.Linear(rank, layer.out_features, bias=has_bias, **kw)
    else:
        conv = type(layer)
        first = conv(layer.in_channels, rank, 1, stride=layer.stride, padding=layer.padding, dilation=layer.dilation,
                     padding_mode=layer.padding_mode, bias=False, **kw)
        second = conv(rank, layer.out_channels, 1, bias=has_bias, **kw)
    with torch.no_grad():
        first.weight.copy_(first_w.reshape(first.weight.shape))
        second.weight.copy_(second_w.reshape(second.weight.shape))
        if has_bias:
            second.bias.copy_(layer.bias)
    return nn.Sequential(first, second), second_w @ first_w
