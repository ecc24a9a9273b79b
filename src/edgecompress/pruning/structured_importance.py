"""Importance for structured pruning: Torch-Pruning's criteria, scoring every channel of a group of coupled layers
(and, through a crafted group, every inner dimension of a hand-written attention); the lower, the earlier it goes."""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch_pruning as tp
from torch import nn
from torch_pruning.dependency import Group
from torch_pruning.pruner import function as tpf

from ..errors import DataError
from .structured_config import StructuredPruneConfig
from .structured_graph import modes_kept
from .structured_opaque import CONV

Batch = tuple[torch.Tensor | tuple[torch.Tensor, ...], torch.Tensor | None]


class _SeededRandom(tp.importance.Importance):
    """Random scores from our own generator (Torch-Pruning's draws from, and advances, the global one)."""

    def __init__(self, seed: int) -> None:
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, group: Group) -> torch.Tensor:
        return torch.rand(len(set(group[0].root_idxs)), generator=self.generator)


class _GeometricMedian(tp.importance.GroupMagnitudeImportance):
    """FPGM (He et al., 2019): a channel whose weights lie close to all the others' (near their geometric median) is
    the most replaceable. Torch-Pruning's FPGMImportance, whose score this is, fails on a grouped conv's inputs."""

    def __init__(self) -> None:
        super().__init__(p=2)

    @staticmethod
    def _rows(item) -> torch.Tensor | None:
        layer, fn = item.dep.layer, item.dep.pruning_fn
        if not isinstance(layer, (CONV, nn.Linear)):
            return None
        weight = layer.weight.data
        transposed = getattr(layer, "transposed", False)
        if fn in (tpf.prune_conv_out_channels, tpf.prune_linear_out_channels):
            rows = (weight.transpose(0, 1) if transposed else weight).flatten(1)
        elif fn in (tpf.prune_conv_in_channels, tpf.prune_linear_in_channels):
            rows = (weight if transposed else weight.transpose(0, 1)).flatten(1)
            if isinstance(layer, CONV) and layer.groups not in (1, layer.in_channels):
                rows = rows.repeat(layer.groups, 1)  # input channel c is row c mod (inputs per group)
        else:
            return None
        return rows[item.idxs].abs().pow(2)

    @torch.no_grad()
    def __call__(self, group: Group) -> torch.Tensor | None:
        scores, roots = [], []
        for item in group.items:
            rows = self._rows(item)
            if rows is not None:
                scores.append(torch.cdist(rows[None], rows[None]).squeeze(0).sum(0))
                roots.append(item.root_idxs)
        return self._normalize(self._reduce(scores, roots), self.normalizer) if scores else None


def criterion_for(config: StructuredPruneConfig) -> tp.importance.Importance:
    # Every score is divided by its group's mean, so that a global ranking compares layers of different scale.
    return {
        "l1": lambda: tp.importance.GroupMagnitudeImportance(p=1),
        "l2": lambda: tp.importance.GroupMagnitudeImportance(p=2),
        "geometric_median": _GeometricMedian,
        "bn_scale": tp.importance.BNScaleImportance,
        "taylor": tp.importance.GroupTaylorImportance,
        "random": lambda: _SeededRandom(config.seed),
    }[config.importance]()


def _split_batch(batch: object) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
    if not isinstance(batch, (tuple, list)) or len(batch) != 2:
        raise DataError(f"taylor importance needs batches of (inputs, labels); got {type(batch).__name__}")
    inputs, labels = batch
    if labels is None:
        raise DataError("taylor importance needs labelled batches; got a batch whose labels are None")
    return (inputs if isinstance(inputs, tuple) else (inputs,)), labels


def accumulate_gradients(model: nn.Module, data: Iterable[Batch]) -> None:
    """Sum ∂(cross-entropy)/∂w over ``data`` into ``.grad``, in eval mode so that batch norms do not move."""
    model.zero_grad(set_to_none=True)
    seen = 0
    with modes_kept(model, eval_mode=True), torch.enable_grad():
        for batch in data:
            inputs, labels = _split_batch(batch)
            nn.functional.cross_entropy(model(*inputs), labels).backward()
            seen += 1
    if seen == 0:
        raise DataError("taylor importance needs at least one batch of labelled data; got none")
    for p in model.parameters():
        if p.grad is None:
            p.grad = torch.zeros_like(p)  # a weight the loss does not reach has no first-order effect
