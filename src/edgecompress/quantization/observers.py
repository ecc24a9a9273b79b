"""Observers watch activations during calibration and propose a range [lo, hi] to quantize."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import numpy as np
import torch
from torch import nn

from ..errors import DataError, UnsupportedError
from .qparams import IntFormat, affine_qparams

# Cap on the values a percentile observer keeps: enough for a stable 99.99th percentile estimate.
_PERCENTILE_SAMPLE_CAP = 1 << 20
_PERCENTILE_PER_BATCH = 1 << 16
# Width given to a histogram whose first batch was all zeros (any positive value works: it merges away).
_MIN_HISTOGRAM_SPAN = 1e-6
# The MSE search evaluates candidates in chunks of at most this many (candidate, point) pairs.
_MSE_CHUNK = 1 << 20
_MSE_ROUNDS = 4
# Probability given to Q's empty bins so that KL(P || Q) is finite where P clipped mass Q cannot hold.
_KL_EPS = 1e-6


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
        if x.numel() == 0:
            return
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


class MovingAverageMinMaxObserver(MinMaxObserver):
    """An exponential moving average of each batch's min and max (the first batch initialises): a single
    extreme batch moves the range by only ``averaging_constant`` of its excess."""

    def __init__(self, averaging_constant: float = 0.01) -> None:
        super().__init__()
        if not 0.0 < averaging_constant <= 1.0:
            raise UnsupportedError(f"averaging_constant must be in (0, 1], got {averaging_constant}")
        self.averaging_constant = averaging_constant

    def update(self, x: torch.Tensor) -> None:
        if x.numel() == 0:
            return
        if self.lo is None or self.hi is None:
            super().update(x)
            return
        self.lo = self.lo + self.averaging_constant * (x.min() - self.lo)
        self.hi = self.hi + self.averaging_constant * (x.max() - self.hi)


class _HistogramObserver(Observer):
    """A fixed number of equal-width bins over a range that always includes 0 (affine_qparams widens to 0
    anyway). When a batch falls outside, the low edge moves by whole old bins and the bin width grows by an
    integer factor k, so every old bin lies inside exactly one new bin: re-binning is an exact merge,
    never an interpolation. Minimal k keeps at least about half the bins between the lowest and highest
    occupied bin."""

    def __init__(self, bins: int) -> None:
        super().__init__()
        if bins < 16:
            raise UnsupportedError(f"a histogram observer needs at least 16 bins, got {bins}")
        self.bins = bins
        self.histogram: torch.Tensor | None = None  # float64 counts, always `bins` long: bounded memory
        self.edge_lo = 0.0  # left edge of bin 0
        self.width = 0.0  # bin width
        self.min_val = math.inf  # exact observed extremes
        self.max_val = -math.inf
        self.zeros = 0.0  # exact zeros (ReLU's floor, padding): binned too, but also counted apart

    def update(self, x: torch.Tensor) -> None:
        flat = x.reshape(-1)
        if flat.numel() == 0:
            return
        if not torch.isfinite(flat).all():
            raise DataError("an activation contains NaN or Inf values; a histogram observer cannot bin them")
        lo, hi = flat.min().item(), flat.max().item()
        self.min_val, self.max_val = min(self.min_val, lo), max(self.max_val, hi)
        self.zeros += float((flat == 0).sum())
        lo, hi = min(lo, 0.0), max(hi, 0.0)
        if self.histogram is None:
            # An all-zero batch still needs a positive width; the first real range merges it into one bin.
            self.edge_lo, self.width = lo, max(hi - lo, _MIN_HISTOGRAM_SPAN) / self.bins
            self.histogram = torch.zeros(self.bins, dtype=torch.float64)
        else:
            self._grow(lo, hi)
        idx = torch.floor((flat.double() - self.edge_lo) / self.width).clamp_(0, self.bins - 1).long()
        self.histogram += torch.bincount(idx, minlength=self.bins).double()

    def _grow(self, lo: float, hi: float) -> None:
        edge_hi = self.edge_lo + self.bins * self.width
        if lo >= self.edge_lo and hi <= edge_hi:
            return
        # The new bins cover the batch and every occupied old bin; empty old bins may fall away, so a range
        # that drifts is shifted rather than widened.
        occupied = torch.nonzero(self.histogram).reshape(-1)
        need_lo = min(lo, self.edge_lo + occupied[0].item() * self.width)
        need_hi = max(hi, self.edge_lo + (occupied[-1].item() + 1) * self.width)
        m = math.ceil((self.edge_lo - need_lo) / self.width)  # old bins prepended (negative: dropped)
        new_lo = self.edge_lo - m * self.width
        k = max(1, math.ceil((need_hi - new_lo) / (self.bins * self.width)))
        # Occupied old bin i lands in new bin (i + m) // k, inside [0, n) by the choice of m and k; the clamp
        # only sends empty old bins (and rounding) to the ends.
        target = torch.div(torch.arange(self.bins) + m, k, rounding_mode="floor").clamp_(0, self.bins - 1)
        self.histogram = torch.zeros_like(self.histogram).index_add_(0, target, self.histogram)
        self.edge_lo, self.width = new_lo, self.width * k

    def _checked(self) -> torch.Tensor:
        """The histogram without the exact zeros: affine quantization represents 0 exactly, so they cost no
        error and must not pull the range in (a post-ReLU spike at 0 otherwise dominates KL and MSE)."""
        if self.histogram is None:
            raise DataError("an activation was never observed: calibration data did not reach this layer")
        hist = self.histogram.clone()
        zero_bin = min(max(math.floor(-self.edge_lo / self.width), 0), self.bins - 1)
        hist[zero_bin] = max(0.0, hist[zero_bin].item() - self.zeros)
        return hist

    def _clip_to_observed(self, lo: float, hi: float) -> tuple[torch.Tensor, torch.Tensor]:
        """A searched range never reaches beyond what was seen and 0 (bin edges may)."""
        lo, hi = max(lo, min(self.min_val, 0.0)), min(hi, max(self.max_val, 0.0))
        return torch.tensor(min(lo, hi), dtype=torch.float32), torch.tensor(hi, dtype=torch.float32)


def _format_bounds(fmt: IntFormat | None, qmin: int | None, qmax: int | None, who: str) -> IntFormat:
    """The integer format to search for, from an IntFormat or a (qmin, qmax) pair, in the form affine_qparams
    takes (int32 zero points hold any 8-bit or narrower zero point unchanged)."""
    if fmt is not None and (qmin is not None or qmax is not None):
        raise UnsupportedError(f"{who}: give either fmt or qmin/qmax, not both")
    if fmt is not None:
        qmin, qmax = fmt.qmin, fmt.qmax
    if qmin is None or qmax is None:
        raise UnsupportedError(f"{who} needs the target integer format: pass fmt=IntFormat (e.g. qparams.UINT8) "
                               "or both qmin= and qmax=")
    if not qmin <= 0 < qmax:
        raise UnsupportedError(f"{who}: the integer range must contain 0 and at least one positive level; "
                               f"got qmin={qmin}, qmax={qmax}")
    return IntFormat(fmt.name if fmt else f"int[{qmin},{qmax}]", torch.int32, int(qmin), int(qmax))


class MSEObserver(_HistogramObserver):
    """The range minimising the mean squared quantization error of the observed values for the target format,
    computed with the same affine_qparams and rounding the quantizer uses.

    The values are a histogram; each non-empty bin counts as ``subsamples`` evenly spaced points (so the error
    does not depend on where bin centres fall on the quantization grid). Candidate ends are fractions of the
    observed extents, L = min(min, 0) and U = max(max, 0): F = {2^(-j/8) for j = 0..96} ∪ {0}, i.e. 8 steps an
    octave down to 1/4096 of the extent. The search first shrinks both ends together (a, b) = (f·L, f·U), then
    refines each end alone over F with the other fixed (coordinate descent, at most ``_MSE_ROUNDS`` rounds),
    so asymmetric clipping is found without a full 98 × 98 grid."""

    def __init__(self, *, fmt: IntFormat | None = None, qmin: int | None = None, qmax: int | None = None,
                 bins: int = 2048, subsamples: int = 8) -> None:
        super().__init__(bins)
        self.fmt = _format_bounds(fmt, qmin, qmax, "MSEObserver")
        if subsamples < 1:
            raise UnsupportedError(f"subsamples must be >= 1, got {subsamples}")
        self.subsamples = subsamples

    def _points(self) -> tuple[torch.Tensor, torch.Tensor]:
        hist = self._checked()
        nonzero = torch.nonzero(hist).reshape(-1)
        offsets = (torch.arange(self.subsamples, dtype=torch.float64) + 0.5) / self.subsamples
        xs = self.edge_lo + (nonzero.double().unsqueeze(1) + offsets) * self.width
        xs = xs.clamp(self.min_val, self.max_val).reshape(-1)
        weights = (hist[nonzero] / self.subsamples).repeat_interleave(self.subsamples)
        return xs, weights

    def _errors(self, xs: torch.Tensor, weights: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        scale, zp = affine_qparams(a, b, self.fmt)
        scale, zp = scale.double().unsqueeze(1), zp.double().unsqueeze(1)
        errors = []
        step = max(1, _MSE_CHUNK // max(1, xs.numel()))
        for i in range(0, scale.shape[0], step):
            s, z = scale[i:i + step], zp[i:i + step]
            q = torch.clamp(torch.round(xs / s) + z, self.fmt.qmin, self.fmt.qmax)
            errors.append((((q - z) * s - xs) ** 2 * weights).sum(1))
        return torch.cat(errors)

    def range(self) -> tuple[torch.Tensor, torch.Tensor]:
        xs, weights = self._points()
        lo_ext, hi_ext = min(self.min_val, 0.0), max(self.max_val, 0.0)
        if lo_ext == hi_ext:  # only zeros were seen
            return self._clip_to_observed(0.0, 0.0)
        fractions = torch.cat([torch.exp2(-torch.arange(97, dtype=torch.float64) / 8),
                               torch.zeros(1, dtype=torch.float64)])
        joint = self._errors(xs, weights, fractions[:-1] * lo_ext, fractions[:-1] * hi_ext)
        best = int(torch.argmin(joint))
        a, b = fractions[best].item() * lo_ext, fractions[best].item() * hi_ext
        for _ in range(_MSE_ROUNDS):
            ea = self._errors(xs, weights, fractions * lo_ext, torch.full_like(fractions, b))
            new_a = fractions[int(torch.argmin(ea))].item() * lo_ext
            eb = self._errors(xs, weights, torch.full_like(fractions, new_a), fractions * hi_ext)
            new_b = fractions[int(torch.argmin(eb))].item() * hi_ext
            if (new_a, new_b) == (a, b):
                break
            a, b = new_a, new_b
        return self._clip_to_observed(a, b)


class EntropyObserver(_HistogramObserver):
    """KL-divergence calibration as in TensorRT: choose the clipping range whose quantized histogram loses the
    least information, KL(P || Q), where P is the histogram clipped to the range with the clipped mass added
    to its end bins, and Q is the same bins merged into the format's qmax - qmin + 1 levels and spread back
    evenly over the bins that P has non-zero (Q's empty bins get a tiny mass so that KL is finite).

    Candidates grow one bin at a time around 0: the range is [max(lo, -t), min(hi, t)] for every threshold t
    on a bin boundary, with at least one bin a level. For non-negative (post-ReLU) tensors this is TensorRT's
    [0, t]; for signed ones it clips both tails at the same magnitude unless a side ends sooner."""

    def __init__(self, *, fmt: IntFormat | None = None, qmin: int | None = None, qmax: int | None = None,
                 bins: int = 2048) -> None:
        super().__init__(bins)
        self.fmt = _format_bounds(fmt, qmin, qmax, "EntropyObserver")
        self.levels = self.fmt.qmax - self.fmt.qmin + 1
        if bins < self.levels:
            raise UnsupportedError(f"EntropyObserver needs at least as many bins as levels ({self.levels}); "
                                   f"got bins={bins}")

    def _candidates(self) -> list[tuple[int, int]]:
        zero = -self.edge_lo / self.width  # position of 0 in bin units, in [0, bins]
        seen = set()
        out = []
        for t in range(1, self.bins + 1):
            start, stop = max(0, math.floor(zero - t)), min(self.bins, math.ceil(zero + t))
            if stop - start >= self.levels and (start, stop) not in seen:
                seen.add((start, stop))
                out.append((start, stop))
            if start == 0 and stop == self.bins:
                break
        return out

    def _kl(self, hist: np.ndarray, start: int, stop: int) -> float:
        sliced = hist[start:stop]
        p = sliced.copy()
        p[0] += hist[:start].sum()
        p[-1] += hist[stop:].sum()
        n = stop - start
        level = np.floor((np.arange(n) + 0.5) * self.levels / n).astype(np.int64)
        nonzero = p > 0
        merged = np.bincount(level, weights=sliced, minlength=self.levels)
        spread = np.bincount(level, weights=nonzero.astype(np.float64), minlength=self.levels)
        q = np.where(nonzero, merged[level] / np.maximum(spread[level], 1.0), 0.0)
        if q.sum() <= 0:  # nothing of the distribution lies inside the range
            return math.inf
        p, q = p / p.sum(), _smooth(q / q.sum())
        mask = p > 0
        return float(np.sum(p[mask] * np.log(p[mask] / q[mask])))

    def range(self) -> tuple[torch.Tensor, torch.Tensor]:
        hist = self._checked().numpy()
        if min(self.min_val, 0.0) == max(self.max_val, 0.0):  # only zeros were seen
            return self._clip_to_observed(0.0, 0.0)
        candidates = self._candidates()
        kl = np.array([self._kl(hist, start, stop) for start, stop in candidates])
        # On ties (e.g. a constant tensor, where no clipping loses anything) prefer the widest range.
        best = len(kl) - 1 - int(np.argmin(kl[::-1]))
        start, stop = candidates[best]
        return self._clip_to_observed(self.edge_lo + start * self.width, self.edge_lo + stop * self.width)


def _smooth(dist: np.ndarray) -> np.ndarray:
    """Give each empty bin of a normalised distribution ``_KL_EPS`` of the mass, taken evenly (in proportion)
    from the others, so that KL(P || Q) is finite and large when P has mass where Q has none."""
    empty = dist == 0
    moved = _KL_EPS * int(empty.sum())
    return np.where(empty, _KL_EPS, dist * (1.0 - moved))


OBSERVER_KINDS = ("minmax", "moving_average", "percentile", "mse", "entropy")


def make_observer(kind: str, *, percentile: float = 99.99, fmt: IntFormat | None = None) -> Observer:
    """A fresh observer of ``kind``. ``mse`` and ``entropy`` search a range for the target integer format
    ``fmt`` (the activation format of the quantizer the observer feeds)."""
    if kind == "minmax":
        return MinMaxObserver()
    if kind == "moving_average":
        return MovingAverageMinMaxObserver()
    if kind == "percentile":
        return PercentileObserver(percentile)
    if kind in ("mse", "entropy"):
        if fmt is None:
            raise UnsupportedError(f"observer {kind!r} searches a range for an integer format: pass fmt=")
        return MSEObserver(fmt=fmt) if kind == "mse" else EntropyObserver(fmt=fmt)
    raise UnsupportedError(f"observer {kind!r} is not supported; allowed: {', '.join(map(repr, OBSERVER_KINDS))}")
