"""How much a model computes and stores: parameters, MACs / FLOPs, and the zeros in its weights."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn
from torch.nn.utils import parametrize

from ..layers import count_macs

# Lookup tables: their rows are gathered, not multiplied, so their zeros save no compute.
_LOOKUP_TABLES = (nn.Embedding, nn.EmbeddingBag)


def _own_tensors(module: nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """The module's own weights as they act in forward: torch.nn.utils.prune's ``weight_orig`` is read
    back as the masked ``weight``; parametrized tensors as their computed value."""
    own = dict(module.named_parameters(recurse=False))
    own.update(module.named_buffers(recurse=False))
    for name, tensor in own.items():
        if name.endswith("_mask") or tensor is None or tensor.dtype == torch.bool:
            continue  # pruning masks select weights; they are not weights
        if name.endswith("_orig") and f"{name[:-5]}_mask" in own:
            effective = getattr(module, name[:-5], None)
            if isinstance(effective, torch.Tensor):
                name, tensor = name[:-5], effective
        yield name, tensor
    if parametrize.is_parametrized(module):
        for name in module.parametrizations:
            yield name, getattr(module, name)


def weight_tensors(model: nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """(qualified name, tensor) of every multiplied weight — a parameter or buffer whose name contains
    "weight" and that has two or more dimensions (Conv, Linear, attention projections, integer-weight
    layers that keep their weights as buffers). When a layer holds a float and an integer copy of the
    same shape, the integer one is what ships and is the one returned. Shared tensors appear once."""
    seen: dict[int, torch.Tensor] = {}  # holds computed tensors too, so their ids are not reused
    for module_name, module in model.named_modules():
        if isinstance(module, _LOOKUP_TABLES):
            continue
        candidates = [(n, t) for n, t in _own_tensors(module) if "weight" in n.lower() and t.dim() >= 2]
        integer_shapes = {tuple(t.shape) for _, t in candidates if not (t.is_floating_point() or t.is_complex())}
        for name, tensor in candidates:
            if tensor.is_floating_point() and tuple(tensor.shape) in integer_shapes:
                continue
            if id(tensor) in seen:
                continue
            seen[id(tensor)] = tensor
            yield (f"{module_name}.{name}" if module_name else name), tensor


def count_params(model: nn.Module) -> int:
    """Elements of all parameters, plus weights stored as buffers (see ``weight_tensors``) so that an
    integer-weight layer is not counted as empty. Bias or scale buffers of such layers are not counted."""
    params = {id(p): p.numel() for p in model.parameters()}
    buffers = {id(b) for b in model.buffers()}
    for _, tensor in weight_tensors(model):
        if id(tensor) in buffers:
            params.setdefault(id(tensor), tensor.numel())
    return int(sum(params.values()))


def count_flops(model: nn.Module, example_inputs: tuple | torch.Tensor) -> int:
    """Exactly 2 × ``count_macs``: the matmul/convolution family only, nothing else added."""
    return 2 * count_macs(model, example_inputs)


def _zeros_and_total(tensor: torch.Tensor) -> tuple[int, int]:
    total = tensor.numel()
    return total - int(torch.count_nonzero(tensor.detach())), total


def layer_sparsity(model: nn.Module) -> dict[str, float]:
    """Fraction of exact zeros in each weight tensor of ``weight_tensors``, keyed by qualified name."""
    result = {}
    for name, tensor in weight_tensors(model):
        zeros, total = _zeros_and_total(tensor)
        result[name] = zeros / total if total else 0.0
    return result


def sparsity(model: nn.Module) -> float:
    """Exact zeros over all elements of the weight tensors of ``weight_tensors`` (0.0 when none)."""
    zeros = total = 0
    for _, tensor in weight_tensors(model):
        z, t = _zeros_and_total(tensor)
        zeros += z
        total += t
    return zeros / total if total else 0.0
