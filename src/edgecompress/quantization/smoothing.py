"""SmoothQuant (Xiao et al., 2023): move activation outliers into the weights before quantizing.

A Linear's input often has a few channels far larger than the rest (BERT after GELU and LayerNorm: 10-100×),
so one per-tensor activation scale leaves the other channels a handful of int8 levels. With per-input-channel
factors s, X·Wᵀ = (X / s)·(W · s)ᵀ exactly; s_j = max|X_j|^α / max|W_j|^(1−α) flattens the activation at
the cost of a wider weight range, which per-output-channel weight scales absorb well.

The division by s is an explicit per-channel multiply in front of the Linear (``Smoothed``), not folded into
the producer: in a post-LayerNorm transformer the producer also feeds the residual stream, which must not be
rescaled. The multiply stays float in every artifact (one elementwise op per layer); the Linear keeps its
integer path and the quantizer after the multiply sees the flattened tensor.

α per layer: fixed, or ``None`` to choose, per layer, the candidate (or no smoothing at all) whose simulated
int8 output is closest to the float output on the calibration inputs — so smoothing never makes a layer's
calibration error worse.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from torch import nn

from ..errors import RecipeError, UnsupportedError
from ..layers import set_submodule, validate_patterns, weight_layers
from .inputs import Batch, CalibrationData, calibration_batches, model_inputs
from .qparams import INT8_WEIGHT, INT8_WEIGHT_REDUCED, UINT8, affine_qparams, symmetric_qparams

DEFAULT_ALPHAS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


@dataclass(frozen=True)
class SmoothingConfig:
    """``alpha``: migration strength in [0, 1] for every layer, or None to pick per layer among ``alphas``
    (and no smoothing). ``reduce_range``: the weights will be 7-bit (see QuantConfig), which the search
    simulates. ``max_rows``: calibration rows (tokens) kept per layer for the search."""

    alpha: float | None = None
    alphas: tuple[float, ...] = DEFAULT_ALPHAS
    ignore: tuple[str, ...] = field(default_factory=tuple)
    reduce_range: bool = False
    max_rows: int = 4096

    def __post_init__(self) -> None:
        for a in (self.alphas if self.alpha is None else (self.alpha,)):
            if not isinstance(a, (int, float)) or isinstance(a, bool) or not 0.0 <= a <= 1.0:
                raise RecipeError(f"smoothing alpha must be a number in [0, 1] (or 'auto'), got {a!r}")
        if self.max_rows < 16:
            raise RecipeError(f"smoothing max_rows must be >= 16, got {self.max_rows}")
        object.__setattr__(self, "ignore", validate_patterns(self.ignore))


class InputScale(nn.Module):
    """x · (1 / s) along the last (feature) dimension."""

    def __init__(self, inverse_scale: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("inverse_scale", inverse_scale.detach().float().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.inverse_scale


class Smoothed(nn.Module):
    """A Linear whose input is divided by s and whose weight columns are multiplied by s: the same function,
    with a flatter input. Quantization replaces ``linear`` and quantizes the output of ``smooth``."""

    def __init__(self, linear: nn.Linear, scale: torch.Tensor) -> None:
        super().__init__()
        with torch.no_grad():
            linear.weight.mul_(scale)
        self.smooth = InputScale(1.0 / scale)
        self.linear = linear

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.smooth(x))


@dataclass(frozen=True)
class SmoothingResult:
    model: nn.Module
    alphas: dict[str, float | None]  # per smoothed layer: the α used (None: left unsmoothed by the search)


def smooth(model: nn.Module, calibration: CalibrationData, config: SmoothingConfig | None = None, *,
           inputs: int = 1) -> SmoothingResult:
    """A copy of ``model`` (left untouched) whose Linear layers are smoothed from statistics of their inputs
    on ``calibration`` (batches of the model's ``inputs`` positional inputs)."""
    config = config or SmoothingConfig()
    smoothed = copy.deepcopy(model).eval()
    layers = {name: m for name, m in weight_layers(smoothed, config.ignore, (nn.Linear,))
              if name and not isinstance(m, nn.modules.linear.NonDynamicallyQuantizableLinear)}
    if not layers:
        raise UnsupportedError(f"{type(model).__name__} has no Linear layer to smooth (ignore: {list(config.ignore)})"
                               "; SmoothQuant applies to Linear layers")
    stats = _collect_inputs(smoothed, layers, calibration_batches(calibration, inputs=inputs), config.max_rows)
    fmt = INT8_WEIGHT_REDUCED if config.reduce_range else INT8_WEIGHT
    chosen: dict[str, float | None] = {}
    for name, layer in layers.items():
        if name not in stats:
            continue  # never called as a module (e.g. read functionally by its parent): nothing to smooth
        weight = layer.weight.detach().float()
        alpha = config.alpha if config.alpha is not None else _best_alpha(stats[name], weight, config.alphas, fmt)
        chosen[name] = alpha
        if alpha is not None:
            set_submodule(smoothed, name, Smoothed(layer, _scale(stats[name].absmax, weight, alpha)))
    return SmoothingResult(smoothed, chosen)


@dataclass(frozen=True)
class _InputStats:
    sample: torch.Tensor  # (rows, in_features), at most max_rows evenly spaced rows
    low: torch.Tensor  # per-channel minimum over every row seen
    high: torch.Tensor  # per-channel maximum over every row seen

    @property
    def absmax(self) -> torch.Tensor:
        return torch.maximum(self.low.abs(), self.high.abs())


@torch.no_grad()
def _collect_inputs(model: nn.Module, layers: dict[str, nn.Linear], batches: list[Batch],
                    max_rows: int) -> dict[str, _InputStats]:
    """Per layer called on the calibration data: the per-channel range of its input over all of it, and a
    sample of its rows for the α search."""
    seen: dict[str, list[torch.Tensor]] = {name: [] for name in layers}
    ranges: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def hook(name):
        def record(_module, args):
            x = args[0].detach().reshape(-1, args[0].shape[-1]).float()
            low, high = x.amin(0), x.amax(0)
            if name in ranges:
                low, high = torch.minimum(ranges[name][0], low), torch.maximum(ranges[name][1], high)
            ranges[name] = (low, high)
            seen[name].append(x)
        return record

    handles = [m.register_forward_pre_hook(hook(name)) for name, m in layers.items()]
    try:
        for batch in batches:
            model(*model_inputs(batch))
    finally:
        for h in handles:
            h.remove()
    stats = {}
    for name, chunks in seen.items():
        if chunks:
            x = torch.cat(chunks)
            if x.shape[0] > max_rows:
                x = x[torch.linspace(0, x.shape[0] - 1, max_rows).long()]
            stats[name] = _InputStats(x, *ranges[name])
    return stats


def _scale(act_absmax: torch.Tensor, weight: torch.Tensor, alpha: float) -> torch.Tensor:
    w_absmax = weight.abs().amax(0)
    s = act_absmax.clamp(min=1e-5).pow(alpha) / w_absmax.clamp(min=1e-5).pow(1.0 - alpha)
    # channels that are zero on one side carry nothing to migrate: leave them as they are
    s = torch.where((act_absmax > 0) & (w_absmax > 0), s, torch.ones_like(s))
    return s.clamp(min=1e-5, max=1e5)


def _quantized_output(stats: _InputStats, s: torch.Tensor, weight: torch.Tensor, fmt) -> torch.Tensor:
    """(x / s)·(w · s)ᵀ with x / s as per-tensor asymmetric uint8 over its full calibration range and w · s
    as symmetric per-output-channel integers."""
    x = stats.sample / s
    scale, zero_point = affine_qparams((stats.low / s).min(), (stats.high / s).max(), UINT8)
    xq = (torch.clamp(torch.round(x / scale) + zero_point, UINT8.qmin, UINT8.qmax) - zero_point) * scale
    w = weight * s
    w_scale, _ = symmetric_qparams(w.abs().amax(1), fmt)
    wq = torch.clamp(torch.round(w / w_scale[:, None]), fmt.qmin, fmt.qmax) * w_scale[:, None]
    return xq @ wq.t()


@torch.no_grad()
def _best_alpha(stats: _InputStats, weight: torch.Tensor, alphas: tuple[float, ...], fmt) -> float | None:
    """The α whose simulated int8 output is closest (mean squared error) to the float output, or None when
    no smoothing is closest."""
    reference = stats.sample @ weight.t()
    ones = torch.ones(weight.shape[1])
    best, best_error = None, (_quantized_output(stats, ones, weight, fmt) - reference).pow(2).mean()
    for alpha in alphas:
        error = (_quantized_output(stats, _scale(stats.absmax, weight, alpha), weight, fmt) - reference).pow(2).mean()
        if error < best_error:
            best, best_error = alpha, error
    return best
