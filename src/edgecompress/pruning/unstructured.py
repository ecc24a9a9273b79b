"""Unstructured pruning with masks: initialize (choose layers) → apply(sparsity) → reapply after every
optimizer step while fine-tuning → finalize (zeros stay, masks go)."""

from __future__ import annotations

import copy
from collections.abc import Iterable

import torch
from torch import nn

from ..errors import DataError
from ..layers import weight_layers
from .config import PruneConfig
from .importance import LossFn, magnitude_scores, random_scores, taylor_scores
from .patterns import block_scores, expand_blocks, n_m_masks, parse_n_m


def masks_for(scores: dict[str, torch.Tensor], sparsity: float, scope: str, pattern: str = "unstructured",
              block: tuple[int, int] = (1, 4)) -> dict[str, torch.Tensor]:
    """Boolean keep-masks that prune exactly round(sparsity·n) of the lowest-scored weights, over all
    layers together (global) or in each layer (layer); or of N:M groups, or of whole blocks (see patterns)."""
    n_m = parse_n_m(pattern)
    if n_m is not None:
        return n_m_masks(scores, sparsity, n_m[1])
    if pattern == "block":
        tiles = masks_for({n: block_scores(s, block) for n, s in scores.items()}, sparsity, scope)
        return {n: expand_blocks(tiles[n], s.shape, block) for n, s in scores.items()}
    if scope == "layer":
        return {name: _keep_mask(s, int(round(sparsity * s.numel()))) for name, s in scores.items()}
    flat = torch.cat([s.reshape(-1) for s in scores.values()])
    keep = _keep_mask(flat, int(round(sparsity * flat.numel())))
    masks, start = {}, 0
    for name, s in scores.items():
        masks[name] = keep[start:start + s.numel()].reshape(s.shape)
        start += s.numel()
    return masks


def _keep_mask(scores: torch.Tensor, n_prune: int) -> torch.Tensor:
    keep = torch.ones(scores.numel(), dtype=torch.bool)
    if n_prune > 0:
        keep[torch.topk(scores.reshape(-1).float(), n_prune, largest=False).indices] = False
    return keep.reshape(scores.shape)


class MaskedPruning:
    """The stateful side of pruning while a model trains. Masks only ever grow: a weight pruned at one
    step stays pruned at the next, whatever the criterion."""

    def __init__(self, model: nn.Module, config: PruneConfig) -> None:
        self.model, self.config = model, config
        self.layers = dict(weight_layers(model, config.ignore))
        if not self.layers:
            raise DataError("no conv/linear layer is left to prune (all ignored, or the model has none)")
        self.masks: dict[str, torch.Tensor] = {n: torch.ones_like(m.weight, dtype=torch.bool)
                                               for n, m in self.layers.items()}
        self._step = 0

    def scores(self, batches: Iterable[tuple[torch.Tensor, torch.Tensor | None]] | None = None,
               loss_fn: LossFn | None = None) -> dict[str, torch.Tensor]:
        method = self.config.method
        if method == "magnitude":
            scores = magnitude_scores(self.layers)
        elif method == "random":
            scores = random_scores(self.layers, self.config.seed + self._step)
        else:
            if batches is None:
                raise DataError("gradient (Taylor) pruning needs data to compute gradients")
            scores = taylor_scores(self.model, self.layers, batches, loss_fn)
        # Already-pruned weights rank lowest so they are chosen again and masks stay monotone.
        return {n: torch.where(self.masks[n], s, torch.full_like(s, -1.0)) for n, s in scores.items()}

    def apply(self, sparsity: float, scores: dict[str, torch.Tensor] | None = None) -> None:
        scores = scores if scores is not None else self.scores()
        self.masks = masks_for(scores, sparsity, self.config.scope, self.config.pattern, self.config.block)
        self._step += 1
        self.reapply()

    @torch.no_grad()
    def reapply(self) -> None:
        """Zero the pruned weights again (call after each optimizer step while fine-tuning)."""
        for name, m in self.layers.items():
            m.weight.mul_(self.masks[name])

    def finalize(self) -> dict[str, float]:
        """Bake the zeros in and return the per-layer sparsity reached."""
        self.reapply()
        return {n: 1.0 - self.masks[n].float().mean().item() for n in self.layers}


def prune(model: nn.Module, config: PruneConfig | None = None, *,
          data: Iterable[tuple[torch.Tensor, torch.Tensor | None]] | None = None,
          loss_fn: LossFn | None = None) -> nn.Module:
    """One-shot unstructured pruning of a copy of ``model`` (no fine-tuning: the pipeline adds that)."""
    config = config or PruneConfig()
    pruned = copy.deepcopy(model)
    pruner = MaskedPruning(pruned, config)
    pruner.apply(config.sparsity, pruner.scores(data, loss_fn))
    pruner.finalize()
    return pruned
