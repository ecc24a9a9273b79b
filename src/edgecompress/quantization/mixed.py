"""Mixed precision (Q5): measure how much each layer suffers at each candidate bit-width, then choose one
bit-width per layer that fits a weight-size budget with the least total damage.

Sensitivity of layer L at b bits is the change in damage when only L moves from 8 to b bits (16: L stays
float) and every other layer stays at 8. Damage is the mean squared error of the model's outputs against
the float model ("sqnr" metric) or the task loss on labelled calibration data ("loss"). Treating the
changes as additive, the choice is a multiple-choice knapsack, solved exactly by dynamic programming over
a discretised size axis.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import DataError, RecipeError
from ..layers import weight_layers
from .config import QuantConfig
from .ptq import quantize

_QUANTIZABLE = (nn.Conv1d, nn.Conv2d, nn.Linear)
_SIZE_STEPS = 20000  # resolution of the knapsack's size axis: 0.005 % of the budget


@dataclass(frozen=True)
class MixedPrecisionPlan:
    layer_bits: dict[str, int]
    weight_bytes: int  # estimated bytes of the quantized layers' weights under this plan
    budget_bytes: int
    int8_bytes: int  # the same layers in uniform INT8
    sensitivity: dict[str, dict[int, float]]  # layer → bits → damage

    def to_dict(self) -> dict:
        return {"layer_bits": self.layer_bits, "weight_bytes": self.weight_bytes, "budget_bytes": self.budget_bytes,
                "int8_bytes": self.int8_bytes,
                "sensitivity": {k: {str(b): v for b, v in d.items()} for k, d in self.sensitivity.items()}}


def layer_weight_bytes(layer: nn.Module, bits: int, group_size: int | None) -> int:
    """Bytes a layer's weights take in the artifact at ``bits``: packed integers plus their float32 scales
    and 8-bit zero points (per group below 8 bits, per channel at 8); 16 means the layer stays float, which
    ONNX stores as float32."""
    n = layer.weight.numel()
    out_channels = layer.weight.shape[0]
    if bits == 16:
        return 4 * n
    if bits >= 8:
        return n + 5 * out_channels
    per_channel = n // out_channels
    groups = out_channels * -(-per_channel // group_size) if group_size else out_channels
    container = 4 if bits == 3 else bits  # 3-bit codes are stored in int4 containers
    return -(-n * container // 8) + 5 * groups


def quantizable_layers(model: nn.Module, ignore: tuple[str, ...] = ()) -> dict[str, nn.Module]:
    return dict(weight_layers(model, ignore, _QUANTIZABLE))


def _damage(reference: torch.Tensor, output: torch.Tensor, labels: torch.Tensor | None, metric: str) -> float:
    if metric == "loss":
        return float(F.cross_entropy(output, labels))
    return float(torch.mean((output - reference) ** 2))


def plan_mixed_precision(model: nn.Module, config: QuantConfig, calibration: torch.Tensor | tuple[torch.Tensor, ...],
                         *,
                         size_budget: float, bits: tuple[int, ...] = (4, 8), metric: str = "sqnr",
                         labels: torch.Tensor | None = None, example_inputs: tuple[torch.Tensor, ...] | None = None
                         ) -> MixedPrecisionPlan:
    """Choose a bit-width per layer (from ``bits``) so that the quantized layers' weights take at most
    ``size_budget`` × their uniform-INT8 bytes, minimising the summed per-layer damage. ``calibration``: the
    model's input tensor, or a tuple of its input tensors (e.g. token ids and attention mask)."""
    if metric not in ("sqnr", "loss"):
        raise RecipeError(f"mixed-precision metric {metric!r} is not allowed; allowed: 'sqnr', 'loss'")
    if metric == "loss" and labels is None:
        raise DataError("mixed-precision metric 'loss' needs labelled calibration data; use metric 'sqnr'")
    bits = tuple(sorted(set(bits)))
    if not bits:
        raise RecipeError("mixed precision needs at least one candidate bit-width")
    layers = quantizable_layers(model, config.ignore)
    if not layers:
        raise DataError(f"{type(model).__name__} has no Conv/Linear layers to quantize")
    group_size = config.group_size or 32
    base = dataclasses.replace(config, weight_bits=8, layer_bits=(), group_size=group_size)
    model = model.eval()
    inputs = (calibration,) if isinstance(calibration, torch.Tensor) else tuple(calibration)
    batches = list(zip(*(t.split(32) for t in inputs), strict=True))
    example_inputs = example_inputs or tuple(t[:1] for t in inputs)
    with torch.no_grad():
        reference = model(*inputs)
        at8 = quantize(model, base, calibration=batches, example_inputs=example_inputs)(*inputs)
    base_damage = _damage(reference, at8, labels, metric)

    sensitivity: dict[str, dict[int, float]] = {}
    for name in layers:
        sensitivity[name] = {}
        for b in bits:
            if b == 8:
                sensitivity[name][b] = 0.0
                continue
            # 16: the layer stays float (float16 in FP16-capable artifacts); usually a negative damage
            cfg = (dataclasses.replace(base, ignore=(*base.ignore, name)) if b == 16
                   else dataclasses.replace(base, layer_bits=((name, b),)))
            with torch.no_grad():
                out = quantize(model, cfg, calibration=batches, example_inputs=example_inputs)(*inputs)
            sensitivity[name][b] = _damage(reference, out, labels, metric) - base_damage

    sizes = {name: {b: layer_weight_bytes(m, b, group_size) for b in bits} for name, m in layers.items()}
    int8_bytes = sum(layer_weight_bytes(m, 8, None) for m in layers.values())
    budget = int(size_budget * int8_bytes)
    choice = _knapsack(list(layers), sizes, sensitivity, budget)
    if choice is None:
        smallest = sum(min(s.values()) for s in sizes.values())
        raise DataError(f"no bit-width assignment fits the budget of {budget} bytes ({size_budget:g} × the INT8 "
                        f"weights' {int8_bytes}); the smallest possible with bits {bits} is {smallest} bytes")
    weight_bytes = sum(sizes[n][b] for n, b in choice.items())
    return MixedPrecisionPlan(choice, weight_bytes, budget, int8_bytes, sensitivity)


def _knapsack(names: list[str], sizes: dict[str, dict[int, int]], damage: dict[str, dict[int, float]],
              budget: int) -> dict[str, int] | None:
    """Multiple-choice knapsack: one option per layer, total size ≤ budget, least total damage (ties: the
    smaller model). Sizes are rounded to ``_SIZE_STEPS`` units of the budget; if rounding lets the true total
    exceed the budget, the capacity shrinks by the excess and the problem is solved again."""
    if budget <= 0:
        return None
    unit = max(1, budget // _SIZE_STEPS)
    capacity = budget // unit
    while capacity >= 0:
        choice = _solve(names, sizes, damage, unit, capacity)
        if choice is None:
            return None
        total = sum(sizes[n][b] for n, b in choice.items())
        if total <= budget:
            return choice
        capacity -= -(-(total - budget) // unit)
    return None


def _solve(names, sizes, damage, unit: int, capacity: int) -> dict[str, int] | None:
    best = np.full(capacity + 1, np.inf)
    best[0] = 0.0  # best[c]: least damage of the layers so far using c units
    picks = []
    for name in names:
        options = sorted(sizes[name])
        candidates = np.full((len(options), capacity + 1), np.inf)
        for k, b in enumerate(options):
            w = round(sizes[name][b] / unit)
            if w <= capacity:
                candidates[k, w:] = best[: capacity + 1 - w] + damage[name][b]
        pick = np.argmin(candidates, axis=0)  # the first minimum: the fewest bits on ties
        best = candidates[pick, np.arange(capacity + 1)]
        picks.append((options, pick))
    if not np.isfinite(best).any():
        return None
    c = int(np.argmin(best))  # the first minimum: the smallest total on ties
    choice = {}
    for name, (options, pick) in zip(reversed(names), reversed(picks), strict=True):
        b = options[int(pick[c])]
        choice[name] = b
        c -= round(sizes[name][b] / unit)
    return dict(reversed(list(choice.items())))
