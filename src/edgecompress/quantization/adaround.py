"""AdaRound (Nagel et al. 2020, "Up or Down? Adaptive Rounding for Post-Training Quantization"): rounding each
weight to nearest is not what minimises a layer's output error. Per layer, a continuous variable V per weight
chooses between floor and floor + 1 through the rectified sigmoid h(V) = clip(sigmoid(V)(ζ - γ) + γ, 0, 1),
trained with Adam to minimise ||f(W x + b) - f(W̃ x̂ + b)||² (f the layer's fused activation, x the layer's input
in the float model, x̂ in the quantized model so far: the paper's asymmetric reconstruction) plus
λ Σ 1 - |2h(V) - 1|^β, whose β is annealed from 20 to 2 after a warm start so that every h(V) ends at 0 or 1.
The scales (and zero points) the layer has are kept; the chosen integers replace its ``weight_int`` through
``assign_weights``, so they are exactly what convert() and every exporter use.

Layers are rounded in execution order, between ``calibrate`` and ``convert`` (the float weights are needed), and
before ``correct_bias``. If on the calibration samples the learned rounding reconstructs worse than rounding to
nearest (a very short run can), the layer keeps rounding to nearest; the report says which. Binary weights
({-1, +1}, no zero level) have no floor / ceil choice of this kind and are refused."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import fx

from ..errors import UnsupportedError
from .modules import QuantizedLayer
from .replay import activation_after, channel_dim, layer_forward, quantized_layers, replay_layers

_ZETA, _GAMMA = 1.1, -0.1  # stretch of the rectified sigmoid (the paper's values)


@dataclass(frozen=True)
class AdaRoundSettings:
    """The paper's and AIMET's settings, except far fewer iterations (a CPU budget: ``iterations`` Adam steps per
    layer on mini-batches of ``batch_size`` calibration samples, at most ``max_samples`` kept) and so a 10x
    learning rate: with the paper's 1e-3, 1000 steps move V by at most 1 and only weights whose fractional part
    is near 0.5 could change their rounding. On the tiny test network with 4-bit per-tensor weights (nearest:
    17.0 dB SQNR), 1000 steps give 19.5 dB at 1e-3 and 29.2 dB at 1e-2."""

    iterations: int = 1000
    batch_size: int = 32
    learning_rate: float = 1e-2
    regularization: float = 0.01
    beta_start: float = 20.0
    beta_end: float = 2.0
    warm_start: float = 0.2
    max_samples: int = 1024
    seed: int = 0

    def __post_init__(self) -> None:
        if min(self.iterations, self.batch_size, self.max_samples) < 1:
            raise UnsupportedError(f"AdaRound iterations, batch_size and max_samples must be >= 1; got "
                                   f"{self.iterations}, {self.batch_size}, {self.max_samples}")
        if not 0.0 <= self.warm_start < 1.0:
            raise UnsupportedError(f"AdaRound warm_start must be in [0, 1), got {self.warm_start}")


@dataclass(frozen=True)
class LayerRounding:
    """One layer's outcome: mean squared reconstruction error on the calibration samples with rounding to
    nearest and with the rounding kept, the fraction of weights rounded the other way than nearest, and whether
    the learned rounding was kept."""

    nearest_error: float
    error: float
    flipped: float
    learned: bool


def adaround(gm: fx.GraphModule, batches: list[torch.Tensor], settings: AdaRoundSettings | None = None
             ) -> dict[str, LayerRounding]:
    """Learn the rounding of every QuantizedLayer of the calibrated, unconverted ``gm`` (in place)."""
    settings = settings or AdaRoundSettings()
    for name, layer in quantized_layers(gm).items():
        if layer.weight_format.nonzero:
            raise UnsupportedError(f"AdaRound cannot round layer {name!r}: its {layer.weight_format.name} weights "
                                   "have no zero level; allowed: formats with consecutive integer levels")
    generator = torch.Generator().manual_seed(settings.seed)
    report: dict[str, LayerRounding] = {}

    def visit(name: str, layer: QuantizedLayer, float_inputs: list[torch.Tensor],
              quantized_inputs: list[torch.Tensor]) -> None:
        scale, zero_point = _expanded_qparams(layer)
        x_float = torch.cat(float_inputs)[:settings.max_samples]
        x_quant = torch.cat(quantized_inputs)[:settings.max_samples]
        activation = activation_after(gm, name)
        target = activation(layer_forward(layer, x_float, layer.weight_float, layer.bias_float))
        nearest = _codes(layer, scale, zero_point, None)
        with torch.enable_grad():
            learned = _learn(layer, scale, zero_point, x_quant, target, activation, settings, generator)
        errors = [_error(layer, codes, scale, zero_point, x_quant, target, activation) for codes in (nearest, learned)]
        keep_learned = errors[1] < errors[0]
        chosen = learned if keep_learned else nearest
        layer.assign_weights(chosen.to(layer.weight_int.dtype).reshape(layer.weight_int.shape), layer.weight_scale,
                             layer.weight_zero_point)
        report[name] = LayerRounding(errors[0], min(errors), float((chosen != nearest).float().mean()), keep_learned)

    replay_layers(gm, batches, visit)
    return report


def _expanded_qparams(layer: QuantizedLayer) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and zero point of every weight element, shaped like the weight: one per output channel (or tensor),
    or one per group of ``group_size`` consecutive elements of a row of the flattened weight."""
    w = layer.weight_float
    scale, zero_point = layer.weight_scale.float(), layer.weight_zero_point.float()
    if layer.group_size is None:
        shape = [-1] + [1] * (w.dim() - 1)
        return scale.reshape(shape).expand_as(w), zero_point.reshape(shape).expand_as(w)
    k = w[0].numel()
    scale = scale.repeat_interleave(layer.group_size, dim=1)[:, :k].reshape(w.shape)
    zero_point = zero_point.repeat_interleave(layer.group_size, dim=1)[:, :k].reshape(w.shape)
    return scale, zero_point


def _codes(layer: QuantizedLayer, scale, zero_point, round_up: torch.Tensor | None) -> torch.Tensor:
    """Integer codes: to nearest (``round_up`` None) or floor plus the given 0/1 choice."""
    fmt = layer.weight_format
    w = layer.weight_float / scale
    q = torch.round(w) if round_up is None else torch.floor(w) + round_up
    return torch.clamp(q + zero_point, fmt.qmin, fmt.qmax)


def _soft_rounding(v: torch.Tensor) -> torch.Tensor:
    return torch.clamp(torch.sigmoid(v) * (_ZETA - _GAMMA) + _GAMMA, 0.0, 1.0)


def _reconstruction(out: torch.Tensor, target: torch.Tensor, dim: int) -> torch.Tensor:
    return (out - target).pow(2).sum(dim).mean()


def _learn(layer, scale, zero_point, x_quant, target, activation, settings: AdaRoundSettings, generator
           ) -> torch.Tensor:
    fmt = layer.weight_format
    w = layer.weight_float / scale
    floor = torch.floor(w)
    rest = (w - floor).clamp(0.0, 1.0)
    # start where h(V) equals the fractional part: the first soft weights are the float weights
    v = (-torch.log((_ZETA - _GAMMA) / (rest - _GAMMA) - 1.0)).requires_grad_(True)
    optimizer = torch.optim.Adam([v], lr=settings.learning_rate)
    warm = int(settings.warm_start * settings.iterations)
    dim, n = channel_dim(layer), x_quant.shape[0]
    for step in range(settings.iterations):
        idx = torch.randint(0, n, (min(settings.batch_size, n),), generator=generator)
        h = _soft_rounding(v)
        weight = (torch.clamp(floor + zero_point + h, fmt.qmin, fmt.qmax) - zero_point) * scale
        loss = _reconstruction(activation(layer_forward(layer, x_quant[idx], weight, layer.bias_float)),
                               target[idx], dim)
        if step >= warm:
            progress = (step - warm) / max(1, settings.iterations - warm)
            beta = settings.beta_end + (settings.beta_start - settings.beta_end) * (1.0 - progress)
            loss = loss + settings.regularization * (1.0 - (2.0 * h - 1.0).abs().pow(beta)).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return _codes(layer, scale, zero_point, (v.detach() >= 0).float())  # h(V) >= 0.5 exactly when V >= 0


def _error(layer, codes, scale, zero_point, x_quant, target, activation) -> float:
    weight = (codes - zero_point) * scale
    out = activation(layer_forward(layer, x_quant, weight, layer.bias_float))
    return float(_reconstruction(out, target, channel_dim(layer)))
