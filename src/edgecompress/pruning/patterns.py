"""Sparsity patterns (P6) beyond free unstructured masks, on the weight viewed as [out, K] (K = in_features, or
in_channels/groups × kernel for a conv: the reduction dimension of the GEMM a runtime computes).

- N:M (semi-structured): in every run of M consecutive weights along K, at most N survive (2:4 is what sparse
  tensor cores and several NPUs accelerate). At a schedule step of lower sparsity s, round(s·M) weights per
  group are pruned, so gradual pruning passes through 3:4 on its way to 2:4.
- block: whole (rows × cols) tiles are kept or pruned, ranked by their mean score, globally or per layer;
  tiles at the matrix edge may be smaller. Blocks suit SIMD kernels and compress well.
"""

from __future__ import annotations

import math

import torch

from ..errors import RecipeError


def parse_n_m(pattern: str) -> tuple[int, int] | None:
    """(N, M) of an ``"N:M"`` pattern, None for other patterns; RecipeError for a malformed one."""
    if ":" not in pattern:
        return None
    try:
        n, m = (int(part) for part in pattern.split(":"))
    except ValueError:
        raise RecipeError(f"sparsity pattern {pattern!r} is not N:M with whole numbers (e.g. '2:4')") from None
    if not 0 < n < m <= 32:
        raise RecipeError(f"sparsity pattern {pattern!r} needs 0 < N < M <= 32 (e.g. '2:4', '1:4', '4:8')")
    return n, m


def n_m_masks(scores: dict[str, torch.Tensor], sparsity: float, m: int) -> dict[str, torch.Tensor]:
    """Keep-masks pruning the round(sparsity·M) lowest-scored weights of every group of M along K. A row's last
    group, when K is not a multiple of M, prunes the same fraction of its fewer weights (rounded down)."""
    per_group = round(sparsity * m)
    return {name: _n_m_mask(s, per_group, m) for name, s in scores.items()}


def _n_m_mask(scores: torch.Tensor, per_group: int, m: int) -> torch.Tensor:
    rows = scores.reshape(scores.shape[0], -1).float()
    out, k = rows.shape
    full = k // m * m
    keep = torch.ones_like(rows, dtype=torch.bool)
    if per_group and full:
        groups = rows[:, :full].reshape(out, -1, m)
        lowest = groups.topk(per_group, dim=-1, largest=False).indices
        keep[:, :full] = torch.ones_like(groups, dtype=torch.bool).scatter(-1, lowest, False).reshape(out, full)
    tail = k - full
    tail_prune = math.floor(per_group * tail / m)
    if tail_prune:
        lowest = rows[:, full:].topk(tail_prune, dim=-1, largest=False).indices
        keep[:, full:] = torch.ones(out, tail, dtype=torch.bool).scatter(-1, lowest, False)
    return keep.reshape(scores.shape)


def block_scores(scores: torch.Tensor, block: tuple[int, int]) -> torch.Tensor:
    """Mean score of each (rows × cols) tile of the [out, K] view: shape [ceil(out/rows), ceil(K/cols)]."""
    rows = scores.reshape(scores.shape[0], -1).float()
    (out, k), (bo, bk) = rows.shape, block
    padded = torch.nn.functional.pad(rows, (0, -k % bk, 0, -out % bo), value=float("nan"))
    tiles = padded.reshape(padded.shape[0] // bo, bo, padded.shape[1] // bk, bk)
    return tiles.nanmean(dim=(1, 3))


def expand_blocks(block_keep: torch.Tensor, shape: torch.Size, block: tuple[int, int]) -> torch.Tensor:
    """A per-tile keep-mask spread back over the weight of ``shape``."""
    out, k = shape[0], math.prod(shape[1:])
    full = block_keep.repeat_interleave(block[0], 0).repeat_interleave(block[1], 1)
    return full[:out, :k].reshape(shape)
