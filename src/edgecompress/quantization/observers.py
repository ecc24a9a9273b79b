"""Observers watch activations during calibration and propose a range [lo, hi] to quantize."""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import nn

from ..errors import DataError, UnsupportedError

# Cap on the values a percentile observer keeps: enough for a stable 99.99th percentile estimate.
_PERCENTILE_SAMPLE_CAP = 1 << 20
_PERCENTILE_PER_BATCH = 1 << 16


class Observer(nn.Module, ABC):
    """Base: ``forward`` records statistics and returns its input unchanged."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            self.update(x.detach().float())
        return x

    @abstractmethod
    def update(self, x: torch.Tensor) -> None:
        """Fold one batch of activations into the statistics."""

    @abstractmethod
    def range(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The (lo, hi) range to quantize; DataError if nothing was observed."""


class MinMaxObserver(Observer):
    """The running minimum and maximum: exact coverage, sensitive to outliers."""

    def __init__(self) -> None:
        super().__init__()
        self.lo: torch.Tensor | None = None
        self.hi: torch.Tensor | None = None

    def update(self, x: torch.Tensor) -> None:
        lo, hi = x.min(), x.max()
        self.lo = lo if self.lo is None else torch.minimum(self.lo, lo)
        self.hi = hi if self.hi is None else torch.maximum(self.hi, hi)

    def range(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.lo is None or self.hi is None:
            raise DataError("an activation was never observed: calibration data did not reach this layer")
        return self.lo, self.hi


class PercentileObserver(Observer):
    """Clips the tails: the range is the (100-p)th … p-th percentile of a seeded sample of the values."""

    def __init__(self, percentile: float = 99.99, seed: int = 0) -> None:
        super().__init__()
        if not 50.0 < percentile <= 100.0:
            raise UnsupportedError(f"percentile must be in (50, 100], got {percentile}")
        self.percentile = percentile
        self._generator = torch.Generator().manual_seed(seed)
        self._samples: list[torch.Tensor] = []
        self._kept = 0

    def update(self, x: torch.Tensor) -> None:
        flat = x.reshape(-1)
        if flat.numel() > _PERCENTILE_PER_BATCH:
            idx = torch.randint(0, flat.numel(), (_PERCENTILE_PER_BATCH,), generator=self._generator)
            flat = flat[idx]
        if self._kept + flat.numel() > _PERCENTILE_SAMPLE_CAP:
            flat = flat[: max(0, _PERCENTILE_SAMPLE_CAP - self._kept)]
        if flat.numel():
            self._samples.append(flat.clone())
            self._kept += flat.numel()

    def range(self) -> tuple[torch.Tensor, torch.Tensor]:
        if not self._samples:
            raise DataError("an activation was never observed: calibration data did not reach this layer")
        values = torch.cat(self._samples)
        q = torch.tensor([1.0 - self.percentile / 100.0, self.percentile / 100.0])
        lo, hi = torch.quantile(values, q)
        return lo, hi


def make_observer(kind: str, *, percentile: float = 99.99) -> Observer:
    if kind == "minmax":
        return MinMaxObserver()
    if kind == "percentile":
        return PercentileObserver(percentile)
    raise UnsupportedError(f"observer {kind!r} is not supported; allowed: 'minmax', 'percentile'")
