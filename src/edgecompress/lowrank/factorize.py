"""The verb: ``factorize(model, FactorizeConfig(...))`` replaces each covered layer by its low-rank factorization
when that really has fewer parameters, on a copy of the model, and says what it did and what it left alone."""

from __future__ import annotations

import copy
import math
from collections import defaultdict
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import DataError, RecipeError
from ..layers import set_submodule, weight_layers
from .config import FactorizeConfig
from .cp import cp_module, cp_params
from .rank import select_rank
from .svd import svd_module, svd_params
from .tucker import tucker_module, tucker_params

# Which layer kinds each method covers ("auto" picks per kind).
_COVERS = {"svd": ("linear", "pointwise"), "tucker": ("spatial",), "cp": ("spatial",)}
_COVER_TEXT = {"svd": "Linear and 1×1 convolutions", "tucker": "k×k convolutions", "cp": "k×k convolutions"}


@dataclass(frozen=True)
class FactorizedLayer:
    """One replaced layer. ``rank``: an int for svd and cp; (r_in, r_out) for tucker, the channels after its first
    1×1 conv and after its core. ``energy_kept``: 1 − ‖W − Ŵ‖² / ‖W‖² of the weight Ŵ the replacement computes."""

    method: str
    rank: int | tuple[int, int]
    params_before: int
    params_after: int
    energy_kept: float


@dataclass(frozen=True)
class FactorizeResult:
    """``model``: the factorized copy. ``layers``: name → what was done. ``skipped``: name → why a conv/linear layer
    was left alone. ``params_before`` / ``params_after``: parameters of the whole model."""

    model: nn.Module
    layers: dict[str, FactorizedLayer]
    skipped: dict[str, str]
    params_before: int
    params_after: int


def factorize(model: nn.Module, config: FactorizeConfig) -> FactorizeResult:
    """Factorize the Linear and Conv1d/Conv2d layers of a copy of ``model`` (never ``model`` itself) as
    ``config`` says. Fine-tune afterwards: truncation below full rank changes the outputs."""
    if not isinstance(config, FactorizeConfig):
        raise RecipeError(f"factorize needs a FactorizeConfig; got {type(config).__name__}")
    if not isinstance(model, nn.Module):
        raise DataError(f"factorize needs a torch.nn.Module; got {type(model).__name__}")
    work = copy.deepcopy(model)
    targets = list(weight_layers(work, config.ignore))
    if not targets:
        raise DataError("factorize found no Linear, Conv1d or Conv2d layer to factorize"
                        + (f" outside ignore={list(config.ignore)}" if config.ignore else ""))
    before = _count(work)
    aliases, parents = _aliases_and_parents(work)
    layers: dict[str, FactorizedLayer] = {}
    skipped: dict[str, str] = {}
    with torch.no_grad():
        for name, layer in targets:
            method, reason = _method_for(layer, config.method, parents[id(layer)])
            if method is None:
                skipped[name] = reason
                continue
            rank = select_rank(method, layer, config)
            own, after = _count(layer), _params_after(method, layer, rank)
            if after >= own:
                skipped[name] = (f"{method} at rank {rank} would have {after} parameters, the layer has {own}: "
                                 "not smaller")
                continue
            if config.param_ratio is not None and after > config.param_ratio * own:
                skipped[name] = (f"{method} at its smallest allowed rank {rank} has {after} parameters, over "
                                 f"param_ratio={config.param_ratio} of the layer's {own}")
                continue
            replacement, approx = _build(method, layer, rank)
            for alias in aliases[id(layer)]:
                if alias:
                    set_submodule(work, alias, replacement)
                else:  # the model is this one layer
                    work = replacement
            layers[name] = FactorizedLayer(method, rank, own, after, _energy_kept(layer.weight, approx))
    return FactorizeResult(work, layers, skipped, before, _count(work))


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _aliases_and_parents(model: nn.Module) -> tuple[dict[int, list[str]], dict[int, list[nn.Module]]]:
    """Every name a module is reachable under (a shared layer is replaced everywhere), and its parents."""
    aliases: dict[int, list[str]] = defaultdict(list)
    parents: dict[int, list[nn.Module]] = defaultdict(list)
    for name, module in model.named_modules(remove_duplicate=False):
        aliases[id(module)].append(name)
        for child in module.children():
            parents[id(child)].append(module)
    return aliases, parents


def _describe(layer: nn.Module) -> str:
    if isinstance(layer, nn.Linear):
        return f"Linear({layer.in_features} → {layer.out_features})"
    return f"{'×'.join(map(str, layer.kernel_size))} {type(layer).__name__}"


def _method_for(layer: nn.Module, method: str, parents: list[nn.Module]) -> tuple[str | None, str]:
    """(the decomposition for ``layer``, '') or (None, why it is left alone)."""
    if any(isinstance(p, nn.MultiheadAttention) for p in parents):
        return None, "nn.MultiheadAttention reads its projection weights directly; they cannot be replaced"
    if isinstance(layer, nn.Linear):
        kind = "linear"
    elif layer.groups != 1:
        return None, f"grouped {_describe(layer)} (groups={layer.groups}); only groups=1 is factorized"
    else:
        kind = "pointwise" if math.prod(layer.kernel_size) == 1 else "spatial"
    if method == "auto":
        return ("tucker" if kind == "spatial" else "svd"), ""
    if kind in _COVERS[method]:
        return method, ""
    return None, f"method {method!r} factorizes {_COVER_TEXT[method]}; this is a {_describe(layer)}"


def _params_after(method: str, layer: nn.Module, rank: int | tuple[int, int]) -> int:
    bias = layer.bias is not None
    if method == "svd":
        out_features, in_features = layer.weight.shape[0], layer.weight[0].numel()
        return svd_params(out_features, in_features, rank, bias)
    if method == "tucker":
        return tucker_params(layer.out_channels, layer.in_channels, math.prod(layer.kernel_size), *rank, bias)
    return cp_params(layer.out_channels, layer.in_channels, layer.kernel_size, rank, bias)


def _build(method: str, layer: nn.Module, rank: int | tuple[int, int]) -> tuple[nn.Sequential, torch.Tensor]:
    if method == "svd":
        return svd_module(layer, rank)
    if method == "tucker":
        return tucker_module(layer, *rank)
    return cp_module(layer, rank)


def _energy_kept(weight: torch.Tensor, approx: torch.Tensor) -> float:
    w = weight.detach().double().cpu()
    total = w.square().sum().item()
    if total == 0.0:
        return 1.0
    return 1.0 - (w - approx.reshape(w.shape).cpu()).square().sum().item() / total
