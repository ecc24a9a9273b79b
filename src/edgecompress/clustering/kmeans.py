"""Batched one-dimensional k-means. Weights are scalars, so assigning a value to its nearest centroid is a binary
search among the midpoints of the sorted centroids (memory O(n), not an n × k distance matrix), and a Lloyd
update is a scatter-add. Each row of the input is clustered on its own: one row per layer, or one per output
channel."""

from __future__ import annotations

import torch

INITS = ("kmeans++", "linear", "density")


def kmeans_1d(values: torch.Tensor, k: int, *, valid: torch.Tensor | None = None, init: str = "kmeans++",
              iterations: int = 30, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Cluster each row of ``values`` (G, N) into ``k`` centroids.

    Returns (centroids (G, k) in float64, ascending; labels (G, N) int64: the nearest centroid of each value).
    Entries where ``valid`` (G, N) is False take no part in the fit (their labels are still the nearest
    centroid). A row with at most k distinct valid values gets exactly those values as centroids (repeated
    to fill k), so it is reproduced bit for bit; a row without valid values gets centroids 0. Lloyd steps stop
    early when the centroids no longer move; an empty cluster keeps its centroid."""
    if values.dim() != 2:
        raise ValueError(f"kmeans_1d expects (rows, values), got shape {tuple(values.shape)}")
    if init not in INITS:
        raise ValueError(f"init {init!r} is not one of {INITS}")
    x = values.detach().to(torch.float64)
    valid = torch.ones_like(x, dtype=torch.bool) if valid is None else valid.to(torch.bool)
    exact, table = _distinct_table(x, valid, k)
    if bool(exact.all()):
        centroids = table
    else:
        centroids = torch.where(exact[:, None], table, _initial(x, valid, k, init, generator))
        weight = valid.to(torch.float64)
        masked = x * weight
        for _ in range(iterations):
            centroids = centroids.sort(dim=1).values
            labels = assign(x, centroids)
            sums = torch.zeros_like(centroids).scatter_add_(1, labels, masked)
            counts = torch.zeros_like(centroids).scatter_add_(1, labels, weight)
            updated = torch.where((counts > 0) & ~exact[:, None], sums / counts.clamp(min=1), centroids)
            if torch.equal(updated, centroids):
                break
            centroids = updated
    centroids = centroids.sort(dim=1).values
    return centroids, assign(x, centroids)


def assign(values: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """Index of the nearest of the ascending ``centroids`` (G, k) for each of ``values`` (G, N); a tie goes to
    the lower centroid."""
    if centroids.shape[1] == 1:
        return torch.zeros(values.shape, dtype=torch.long, device=values.device)
    midpoints = ((centroids[:, 1:] + centroids[:, :-1]) / 2).contiguous()
    return torch.searchsorted(midpoints, values.to(midpoints.dtype).contiguous())


def _distinct_table(x: torch.Tensor, valid: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows with at most k distinct valid values, and for them the table of those values (the largest repeated
    to fill k; 0 for rows without valid values)."""
    s, order = torch.where(valid, x, torch.inf).sort(dim=1)
    valid_sorted = valid.gather(1, order)
    first = valid_sorted.clone()
    first[:, 1:] &= s[:, 1:] != s[:, :-1]
    distinct = first.sum(dim=1)
    exact = distinct <= k
    slot = (first.cumsum(dim=1) - 1).clamp(0, k - 1)
    keep = first & exact[:, None]
    table = torch.zeros(x.shape[0], k, dtype=x.dtype, device=x.device)
    table.scatter_add_(1, torch.where(keep, slot, 0), torch.where(keep, s, 0.0))
    last = table.gather(1, (distinct - 1).clamp(0, k - 1)[:, None])
    fill = torch.arange(k, device=x.device)[None, :] >= distinct[:, None]
    return exact, torch.where(fill & (distinct > 0)[:, None], last, table)


def _initial(x: torch.Tensor, valid: torch.Tensor, k: int, init: str, generator: torch.Generator | None
             ) -> torch.Tensor:
    has_values = valid.any(dim=1)
    if init == "linear":
        lo = torch.where(valid, x, torch.inf).amin(dim=1)
        hi = torch.where(valid, x, -torch.inf).amax(dim=1)
        lo, hi = torch.where(has_values, lo, 0.0), torch.where(has_values, hi, 0.0)
        steps = torch.linspace(0.0, 1.0, k, dtype=x.dtype, device=x.device)
        return lo[:, None] + (hi - lo)[:, None] * steps[None, :]
    if init == "density":  # equal numbers of weights between consecutive centroids (the CDF, evenly spaced)
        s = torch.where(valid, x, torch.inf).sort(dim=1).values
        n = valid.sum(dim=1, keepdim=True)
        levels = (torch.arange(k, dtype=x.dtype, device=x.device) + 0.5) / k
        pos = (levels[None, :] * n).floor().long().clamp(max=(n - 1).clamp(min=0))
        return torch.where(has_values[:, None], s.gather(1, pos), 0.0)
    return _kmeans_plus_plus(x, valid, k, generator)


def _kmeans_plus_plus(x: torch.Tensor, valid: torch.Tensor, k: int, generator: torch.Generator | None
                      ) -> torch.Tensor:
    """Arthur & Vassilvitskii (2007): the first centroid uniformly among the valid values, each next one with
    probability proportional to the squared distance to the nearest centroid chosen so far."""
    uniform = valid.to(torch.float64)
    chosen = [_sample(x, uniform, uniform, generator)]
    nearest = torch.where(valid, (x - chosen[0][:, None]) ** 2, 0.0)
    for _ in range(1, k):
        chosen.append(_sample(x, nearest, uniform, generator))
        nearest = torch.minimum(nearest, torch.where(valid, (x - chosen[-1][:, None]) ** 2, 0.0))
    return torch.stack(chosen, dim=1)


def _sample(x: torch.Tensor, weights: torch.Tensor, fallback: torch.Tensor, generator: torch.Generator | None
            ) -> torch.Tensor:
    """One value per row drawn with probability ∝ ``weights`` (``fallback`` where a row's weights are all 0, as
    when every value already is a centroid). An inverse-CDF draw: torch.multinomial stops at 2**24 categories."""
    weights = torch.where((weights.sum(dim=1) > 0)[:, None], weights, fallback)
    cdf = weights.cumsum(dim=1)
    total = cdf[:, -1:]
    u = torch.rand(x.shape[0], 1, dtype=x.dtype, device=x.device, generator=generator) * total
    index = torch.searchsorted(cdf, u, right=True).clamp(max=x.shape[1] - 1)
    picked = x.gather(1, index).squeeze(1)
    return torch.where(total.squeeze(1) > 0, picked, 0.0)
