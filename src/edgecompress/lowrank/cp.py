"""CP (CANDECOMP/PARAFAC) of a k×k convolution (Lebedev et al., 2015): W ≈ Σ_r λ_r a_out ⊗ a_in ⊗ a_k1 (⊗ a_k2),
run as a 1×1 conv (in → R), one depthwise conv per spatial axis (R → R, kernel along that axis only, with that
axis's stride, padding and dilation), and a 1×1 conv (R → out, with λ and the layer's bias): 1×1 → k → 1×1 for
Conv1d, the 4-conv 1×1 → kh×1 → 1×kw → 1×1 for Conv2d. CP-ALS from tensorly; approximate at every rank."""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
from torch import nn

from .tucker import import_tensorly

_ALS_ITERATIONS = 300
_ALS_TOLERANCE = 1e-8
_RIDGE = 1e-12


def cp_params(out_channels: int, in_channels: int, kernel_size: tuple[int, ...], rank: int, bias: bool) -> int:
    """Parameters of the 1×1, depthwise and 1×1 convs at CP rank ``rank``."""
    return rank * (in_channels + out_channels + sum(kernel_size)) + (out_channels if bias else 0)


def cp_max_rank(shape: tuple[int, ...] | torch.Size) -> int:
    """An upper bound of a tensor's CP rank: the product of its dimensions but the largest."""
    return math.prod(shape) // max(shape)


def cp_factors(weight: torch.Tensor, rank: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """(λ (R,), [a_out (out, R), a_in (in, R), a_k (k, R) per spatial axis]), float64."""
    tl = import_tensorly()
    array = weight.detach().double().cpu().numpy()
    norm = float(np.linalg.norm(array)) or 1.0
    with tl.backend_context("numpy"), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # SVD initialisation pads with random columns when R > a mode
        try:
            scale, factors = _parafac(tl, array / norm, rank, l2_reg=0.0)
        except np.linalg.LinAlgError:
            # ALS's normal equations are singular when R exceeds what the weight holds (or channels are zero): a
            # ridge of 1e-12 on the unit-norm tensor makes them solvable (measured: relative error ≤ 5e-10)
            scale, factors = _parafac(tl, array / norm, rank, l2_reg=_RIDGE)
    return torch.from_numpy(scale * norm), [torch.from_numpy(f.copy()) for f in factors]


def _parafac(tl, array: np.ndarray, rank: int, *, l2_reg: float):
    return tl.decomposition.parafac(array, rank=rank, init="svd", n_iter_max=_ALS_ITERATIONS, tol=_ALS_TOLERANCE,
                                    random_state=0, normalize_factors=True, l2_reg=l2_reg)


def _axis_padding(padding: str | tuple[int, ...], axis: int) -> str | tuple[int, ...]:
    """The layer's padding along ``axis`` only ('same' and 'valid' apply to each axis on its own)."""
    if isinstance(padding, str):
        return padding
    return tuple(p if i == axis else 0 for i, p in enumerate(padding))


def _only(values: tuple[int, ...], axis: int, other: int) -> tuple[int, ...]:
    return tuple(v if i == axis else other for i, v in enumerate(values))


def cp_module(layer: nn.Conv1d | nn.Conv2d, rank: int) -> tuple[nn.Sequential, torch.Tensor]:
    """(Sequential 1×1 → depthwise per axis → 1×1 replacing ``layer``, the weight it computes, float64)."""
    scale, (a_out, a_in, *a_axes) = cp_factors(layer.weight, rank)
    conv = type(layer)
    kw = {"device": layer.weight.device, "dtype": layer.weight.dtype}
    dims = len(layer.kernel_size)
    pointwise = (1,) * dims
    has_bias = layer.bias is not None
    first = conv(layer.in_channels, rank, 1, bias=False, **kw)
    depthwise = [conv(rank, rank, _only(layer.kernel_size, axis, 1), stride=_only(layer.stride, axis, 1),
                      padding=_axis_padding(layer.padding, axis), dilation=_only(layer.dilation, axis, 1),
                      groups=rank, padding_mode=layer.padding_mode, bias=False, **kw)
                 for axis in range(dims)]
    last = conv(rank, layer.out_channels, 1, bias=has_bias, **kw)
    with torch.no_grad():
        first.weight.copy_(a_in.T.reshape(rank, layer.in_channels, *pointwise))
        for axis, (module, factor) in enumerate(zip(depthwise, a_axes, strict=True)):
            module.weight.copy_(factor.T.reshape(rank, 1, *_only(layer.kernel_size, axis, 1)))
        last.weight.copy_((a_out * scale[None, :]).reshape(layer.out_channels, rank, *pointwise))
        if has_bias:
            last.bias.copy_(layer.bias)
    letters = "klmn"[:dims]
    spec = ",".join(["r", "or", "ir"] + [f"{c}r" for c in letters]) + f"->oi{letters}"
    return nn.Sequential(first, *depthwise, last), torch.einsum(spec, scale, a_out, a_in, *a_axes)
