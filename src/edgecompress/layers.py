"""Layer targeting shared by every technique: exact names or ``re:<regex>`` patterns (never callables,
which cannot live in a YAML recipe)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import NamedTuple

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .errors import RecipeError, UnsupportedError

PRUNABLE_TYPES: tuple[type[nn.Module], ...] = (nn.Conv1d, nn.Conv2d, nn.Linear)


class Layers(NamedTuple):
    """One architecture, two signal shapes: the layer classes for 1-D sequences or 2-D images."""

    conv: type[nn.Conv1d] | type[nn.Conv2d]
    batch_norm: type[nn.BatchNorm1d] | type[nn.BatchNorm2d]
    global_pool: type[nn.AdaptiveAvgPool1d] | type[nn.AdaptiveAvgPool2d]


def layers_for(dims: int) -> Layers:
    """The layer classes for (B, C, L) signals (``dims=1``) or (B, C, H, W) images (``dims=2``)."""
    if dims == 1:
        return Layers(nn.Conv1d, nn.BatchNorm1d, nn.AdaptiveAvgPool1d)
    if dims == 2:
        return Layers(nn.Conv2d, nn.BatchNorm2d, nn.AdaptiveAvgPool2d)
    raise UnsupportedError(f"dims must be 1 (signals) or 2 (images), got {dims!r}")


def validate_patterns(patterns: Iterable[str], *, where: str = "ignore") -> tuple[str, ...]:
    """Check that each ``re:`` pattern compiles; return the patterns as a tuple."""
    out = []
    for p in patterns:
        if not isinstance(p, str) or not p:
            raise RecipeError(f"{where}: {p!r} is not a layer name or 're:<regex>' pattern")
        if p.startswith("re:"):
            try:
                re.compile(p[3:])
            except re.error as e:
                raise RecipeError(f"{where}: {p!r} is not a valid regular expression ({e})") from None
        out.append(p)
    return tuple(out)


def matches(name: str, patterns: Iterable[str]) -> bool:
    """True when ``name`` equals a pattern or fully matches one of its ``re:`` regexes."""
    for p in patterns:
        if p.startswith("re:"):
            if re.fullmatch(p[3:], name):
                return True
        elif p == name:
            return True
    return False


def weight_layers(model: nn.Module, ignore: Iterable[str] = (), types: tuple[type[nn.Module], ...] = PRUNABLE_TYPES
                  ) -> Iterator[tuple[str, nn.Module]]:
    """(name, module) of every conv/linear layer not ignored; a layer inside an ignored parent is ignored."""
    ignore = tuple(ignore)
    for name, module in model.named_modules():
        if isinstance(module, types) and not _ignored(name, ignore):
            yield name, module


def set_submodule(root: nn.Module, name: str, module: nn.Module) -> None:
    """Put ``module`` at the dotted path ``name`` under ``root`` (the parent must exist)."""
    parent_name, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent_name) if parent_name else root, child, module)


def _ignored(name: str, ignore: tuple[str, ...]) -> bool:
    parts = name.split(".")
    return any(matches(".".join(parts[:i]), ignore) for i in range(1, len(parts) + 1))


def count_macs(model: nn.Module, example_inputs: tuple | torch.Tensor) -> int:
    """Multiply-accumulates of one forward pass on ``example_inputs`` (so for their batch size), in eval
    mode, counted by ``torch.utils.flop_counter``: matmul, linear, convolution and attention kernels,
    which it counts as 2 FLOPs per MAC. Element-wise ops, activations, normalisation and bias additions
    are not counted. Each module's train/eval mode is restored afterwards. (Here rather than in measure so
    that techniques, which may not import measure, count exactly what the report counts.)"""
    inputs = example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter:
            model(*inputs)
    finally:
        for module, training in modes.items():
            module.training = training
    return int(counter.get_total_flops()) // 2
