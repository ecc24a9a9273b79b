"""Weight clustering (L3): every conv/linear weight takes one of k shared values (its codebook), so it can be
stored as small indices plus the codebook (export/onnx_codebook). Lifecycle: initialize (k-means per layer or
per output channel) → ``step()`` after each optimizer step while fine-tuning → ``finalize()``.

Fine-tuning with shared centroids keeps each weight's cluster fixed (Deep Compression, Han et al. 2016) and,
after every optimizer step, sets each centroid to the mean of its members' updated weights and writes it back.
For plain SGD that is the same step as averaging the gradients per cluster; unlike gradient averaging it keeps
the weights on the codebook under any optimizer (Adam's per-weight moments and weight decay would otherwise
pull the members of a cluster apart), and it needs no hooks on the model."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import DataError
from ..layers import weight_layers
from .config import ClusterConfig
from .kmeans import kmeans_1d


@dataclass
class _Codebook:
    indices: torch.Tensor  # (G, N) int64: the centroid of each weight, G = 1 (per layer) or out channels
    centroids: torch.Tensor  # (G, k) in the weight's dtype
    counts: torch.Tensor  # (G, k) float64: members per centroid (fixed, since indices are)
    frozen: torch.Tensor  # (G, k) bool: the reserved zero centroids


class ClusteredTraining:
    """Clustering while a model fine-tunes. ``.model`` is a clustered copy of the model given: build the
    optimizer over its parameters, call ``step()`` after each optimizer step, and ``finalize()`` at the end."""

    def __init__(self, model: nn.Module, config: ClusterConfig | None = None) -> None:
        self.config = config or ClusterConfig()
        self.model = copy.deepcopy(model)
        self.layers = dict(weight_layers(self.model, self.config.ignore))
        if not self.layers:
            raise DataError("no conv/linear layer is left to cluster (all ignored, or the model has none)")
        self._books = {name: _fit(m.weight, self.config, self.config.seed + i)
                       for i, (name, m) in enumerate(self.layers.items())}
        self._project()

    @torch.no_grad()
    def step(self) -> None:
        """Move each centroid to the mean of its members' weights (after the optimizer changed them) and put
        every weight back on its centroid. Reserved zeros stay 0."""
        for name, m in self.layers.items():
            book = self._books[name]
            w = m.weight.detach().reshape(book.indices.shape).to(torch.float64)
            sums = torch.zeros_like(book.counts).scatter_add_(1, book.indices, w)
            means = torch.where(book.counts > 0, sums / book.counts.clamp(min=1), book.centroids.to(torch.float64))
            book.centroids = torch.where(book.frozen, 0.0, means).to(book.centroids.dtype)
        self._project()

    def finalize(self) -> nn.Module:
        """The model, every clustered weight exactly its codebook value."""
        self._project()
        return self.model

    def codebooks(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Per layer: (indices, centroids). indices (int64) has the weight's shape; centroids is (k,) for a
        per-layer codebook, so ``weight == centroids[indices]``, or (out_channels, k) per channel, so
        ``weight[c] == centroids[c][indices[c]]``. A codebook may repeat a value when a layer (or channel) has
        fewer distinct weights than k."""
        out = {}
        for name, m in self.layers.items():
            book = self._books[name]
            centroids = book.centroids if self.config.per_channel else book.centroids[0]
            out[name] = (book.indices.reshape(m.weight.shape).clone(), centroids.clone())
        return out

    @torch.no_grad()
    def _project(self) -> None:
        for name, m in self.layers.items():
            book = self._books[name]
            m.weight.copy_(book.centroids.gather(1, book.indices).reshape(m.weight.shape))


def cluster(model: nn.Module, config: ClusterConfig | None = None) -> nn.Module:
    """One-shot clustering of a copy of ``model``: each conv/linear weight replaced by its centroid (no
    fine-tuning: use ClusteredTraining for that)."""
    return ClusteredTraining(model, config).finalize()


def _fit(weight: torch.Tensor, config: ClusterConfig, seed: int) -> _Codebook:
    """k-means on one layer's weight. Rows (the layer, or each output channel) that contain an exact zero keep
    centroid 0 for their zeros, at index 0, and cluster their nonzero weights into the other k − 1."""
    k = config.num_clusters
    groups = weight.shape[0] if config.per_channel else 1
    w = weight.detach().reshape(groups, -1).to(torch.float64)
    generator = torch.Generator(device=w.device).manual_seed(seed)
    zero = w == 0
    has_zero = zero.any(dim=1)
    centroids = torch.zeros(groups, k, dtype=torch.float64, device=w.device)
    indices = torch.zeros(w.shape, dtype=torch.long, device=w.device)
    for rows, slots in ((~has_zero, k), (has_zero, k - 1)):
        if not bool(rows.any()):
            continue
        c, labels = kmeans_1d(w[rows], slots, valid=~zero[rows], init=config.init, iterations=config.iterations,
                              generator=generator)
        offset = k - slots  # 1 where slot 0 is the reserved zero
        centroids[rows, offset:] = c
        indices[rows] = torch.where(zero[rows], 0, labels + offset)
    frozen = torch.zeros(groups, k, dtype=torch.bool, device=w.device)
    frozen[:, 0] = has_zero
    counts = torch.zeros_like(centroids).scatter_add_(1, indices, torch.ones_like(w))
    return _Codebook(indices, centroids.to(weight.dtype), counts, frozen)
