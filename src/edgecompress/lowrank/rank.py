"""Rank selection, kept apart from the factorizations that use it: by a fraction of the full rank, by retained
energy (squared singular values), or by a parameter budget. Ranks never fall below ``min_rank`` nor exceed the
full rank (lossless for SVD and Tucker-2)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from ..errors import RecipeError
from .config import FactorizeConfig
from .cp import cp_max_rank, cp_params
from .svd import matrix_of, svd_params
from .tucker import tucker_params, unfoldings

_EPS = 1e-9  # ratio × full that is a whole number up to rounding (0.3 × 10) must not round up to the next one


def _clamp(rank: int, full: int, min_rank: int) -> int:
    return max(min(min_rank, full), min(rank, full))


def ratio_rank(full: int, ratio: float, *, min_rank: int = 1) -> int:
    """ceil(ratio × full), at least ``min_rank`` (capped at ``full``)."""
    return _clamp(math.ceil(ratio * full - _EPS), full, min_rank)


def energy_rank(singular_values: torch.Tensor, energy: float, *, min_rank: int = 1) -> int:
    """The smallest rank whose singular values keep ``energy`` of the sum of their squares (energy 1: full rank)."""
    full = singular_values.numel()
    if energy >= 1.0:
        return full
    squares = singular_values.double().square()
    total = squares.sum()
    if total == 0:  # an all-zero weight: any rank is exact
        return _clamp(1, full, min_rank)
    share = squares.cumsum(0) / total
    rank = int(torch.searchsorted(share, torch.tensor([energy * (1 - _EPS)], dtype=share.dtype)).item()) + 1
    return _clamp(rank, full, min_rank)


def budget_rank(params_of: Callable[[int], int], budget: float, full: int, *, min_rank: int = 1) -> int:
    """The largest rank r <= ``full`` with params_of(r) <= ``budget`` (params_of grows with r); 1 if none fits."""
    lo, hi = 1, full
    while lo < hi:  # binary search for the last rank within budget
        mid = (lo + hi + 1) // 2
        if params_of(mid) <= budget:
            lo = mid
        else:
            hi = mid - 1
    return _clamp(lo, full, min_rank)


def _layer_params(layer: nn.Module) -> int:
    return sum(p.numel() for p in layer.parameters())


def svd_rank(layer: nn.Linear | nn.Conv1d | nn.Conv2d, config: FactorizeConfig) -> int:
    """Rank of the SVD of a Linear or 1×1 conv under ``config``'s rank rule."""
    matrix = matrix_of(layer)
    out_features, in_features = matrix.shape
    full = min(out_features, in_features)
    if config.rank_ratio is not None:
        return ratio_rank(full, config.rank_ratio, min_rank=config.min_rank)
    if config.energy is not None:
        return energy_rank(torch.linalg.svdvals(matrix.double()), config.energy, min_rank=config.min_rank)
    bias = layer.bias is not None
    return budget_rank(lambda r: svd_params(out_features, in_features, r, bias),
                       config.param_ratio * _layer_params(layer), full, min_rank=config.min_rank)


def tucker_full_ranks(weight: torch.Tensor) -> tuple[int, int]:
    """(r_in, r_out) of a lossless Tucker-2: the ranks of the weight's input- and output-mode unfoldings' shapes."""
    out_channels, in_channels = weight.shape[:2]
    taps = math.prod(weight.shape[2:])
    return min(in_channels, out_channels * taps), min(out_channels, in_channels * taps)


def consistent_ranks(r_in: int, r_out: int, taps: int) -> tuple[int, int]:
    """Shrink (r_in, r_out) until neither exceeds what the other mode can carry (r_in <= r_out × taps and
    r_out <= r_in × taps): a larger rank adds parameters that hold nothing."""
    while True:
        new = min(r_in, r_out * taps), min(r_out, r_in * taps)
        if new == (r_in, r_out):
            return new
        r_in, r_out = new


def tucker_ranks(layer: nn.Conv1d | nn.Conv2d, config: FactorizeConfig) -> tuple[int, int]:
    """(r_in, r_out) of the Tucker-2 of a k×k conv under ``config``'s rank rule: channels after the first 1×1
    conv and after the core conv."""
    weight = layer.weight.detach()
    full_in, full_out = tucker_full_ranks(weight)
    taps = math.prod(weight.shape[2:])
    lowest = config.min_rank
    if config.rank_ratio is not None:
        ranks = (ratio_rank(full_in, config.rank_ratio, min_rank=lowest),
                 ratio_rank(full_out, config.rank_ratio, min_rank=lowest))
    elif config.energy is not None:
        out_unfolding, in_unfolding = unfoldings(weight.double())
        ranks = (energy_rank(torch.linalg.svdvals(in_unfolding), config.energy, min_rank=lowest),
                 energy_rank(torch.linalg.svdvals(out_unfolding), config.energy, min_rank=lowest))
    else:
        ranks = _tucker_budget_ranks(layer, config.param_ratio * _layer_params(layer), full_in, full_out, lowest)
    return consistent_ranks(*ranks, taps)


def _tucker_budget_ranks(layer: nn.Conv1d | nn.Conv2d, budget: float, full_in: int, full_out: int,
                         min_rank: int) -> tuple[int, int]:
    """Both ranks the same fraction of their full rank, the largest that fits ``budget``."""
    top = max(full_in, full_out)
    taps = math.prod(layer.weight.shape[2:])
    bias = layer.bias is not None

    def ranks_at(step: int) -> tuple[int, int]:
        r_in = _clamp(max(1, round(step * full_in / top)), full_in, min_rank)
        r_out = _clamp(max(1, round(step * full_out / top)), full_out, min_rank)
        return consistent_ranks(r_in, r_out, taps)

    def params_at(step: int) -> int:
        return tucker_params(layer.out_channels, layer.in_channels, taps, *ranks_at(step), bias)

    return ranks_at(budget_rank(params_at, budget, top))


def cp_rank(layer: nn.Conv1d | nn.Conv2d, config: FactorizeConfig) -> int:
    """Rank R of the CP of a k×k conv: rank_ratio × max(in, out) channels, or the largest R within the parameter
    budget. A CP has no lossless rank that is cheap to know; max(in, out) is the usual scale."""
    weight = layer.weight.detach()
    ceiling = cp_max_rank(weight.shape)
    if config.rank_ratio is not None:
        reference = min(max(layer.in_channels, layer.out_channels), ceiling)
        return ratio_rank(reference, config.rank_ratio, min_rank=config.min_rank)
    if config.param_ratio is None:
        raise RecipeError(f"energy={config.energy} cannot choose a CP rank (a CP has no singular values to keep); "
                          "use rank_ratio or param_ratio")
    bias = layer.bias is not None
    return budget_rank(lambda r: cp_params(layer.out_channels, layer.in_channels, layer.kernel_size, r, bias),
                       config.param_ratio * _layer_params(layer), ceiling, min_rank=config.min_rank)


RANK_SELECTORS: dict[str, Callable[[nn.Module, FactorizeConfig], int | tuple[int, int]]] = {
    "svd": svd_rank, "tucker": tucker_ranks, "cp": cp_rank}


def select_rank(method: str, layer: nn.Module, config: FactorizeConfig) -> int | tuple[int, int]:
    """The rank ``method`` uses for ``layer``: an int for svd and cp, (r_in, r_out) for tucker."""
    if method not in RANK_SELECTORS:
        raise RecipeError(f"no rank rule for method {method!r}; allowed: {', '.join(RANK_SELECTORS)}")
    return RANK_SELECTORS[method](layer, config)
