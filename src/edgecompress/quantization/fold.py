"""Batch-norm folding: exact algebra that removes BN at inference (conv/linear followed by BN)."""

from __future__ import annotations

import copy

import torch
from torch import fx, nn

from ..layers import set_submodule

_FOLDABLE = {
    nn.Conv1d: nn.BatchNorm1d,
    nn.Conv2d: nn.BatchNorm2d,
    nn.Linear: nn.BatchNorm1d,
}


def fold_bn_into(layer: nn.Conv1d | nn.Conv2d | nn.Linear, bn: nn.modules.batchnorm._BatchNorm) -> nn.Module:
    """A copy of ``layer`` whose weight and bias absorb ``bn`` (using its running statistics)."""
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("batch norm without running statistics cannot be folded")
    folded = copy.deepcopy(layer)
    with torch.no_grad():
        gamma = bn.weight if bn.affine else torch.ones_like(bn.running_var)
        beta = bn.bias if bn.affine else torch.zeros_like(bn.running_var)
        factor = gamma / torch.sqrt(bn.running_var + bn.eps)
        shape = [-1] + [1] * (layer.weight.dim() - 1)
        folded.weight.copy_(layer.weight * factor.reshape(shape))
        bias = layer.bias if layer.bias is not None else torch.zeros_like(bn.running_mean)
        folded.bias = nn.Parameter((bias - bn.running_mean) * factor + beta)
    return folded


def _is_module(gm: fx.GraphModule, node: fx.Node, kinds: tuple[type, ...]) -> bool:
    return node.op == "call_module" and isinstance(gm.get_submodule(str(node.target)), kinds)


def fold_batchnorm(gm: fx.GraphModule) -> list[str]:
    """Fold every BN that directly follows a conv/linear whose output feeds only that BN. Returns the
    names of the BN modules removed. The graph module is modified in place and must be in eval mode;
    Linear+BN pairs are folded only when shape propagation has shown the Linear output is 2-D."""
    folded: list[str] = []
    for node in list(gm.graph.nodes):
        if not _is_module(gm, node, (nn.BatchNorm1d, nn.BatchNorm2d)):
            continue
        producer = node.args[0]
        if not isinstance(producer, fx.Node) or len(producer.users) != 1:
            continue
        layer_types = tuple(t for t, bn_t in _FOLDABLE.items() if isinstance(gm.get_submodule(str(node.target)), bn_t))
        if not _is_module(gm, producer, layer_types):
            continue
        layer = gm.get_submodule(str(producer.target))
        bn = gm.get_submodule(str(node.target))
        if isinstance(layer, nn.Linear) and _rank(producer) != 2:
            continue  # BatchNorm1d normalises dim 1, which is a feature dim only for (batch, features)
        set_submodule(gm, str(producer.target), fold_bn_into(layer, bn))
        node.replace_all_uses_with(producer)
        gm.graph.erase_node(node)
        folded.append(str(node.target))
    gm.graph.lint()
    gm.delete_all_unused_submodules()
    gm.recompile()
    return folded


def _rank(node: fx.Node) -> int | None:
    meta = node.meta.get("tensor_meta")  # set by torch.fx.passes.shape_prop.ShapeProp
    return len(meta.shape) if meta is not None and hasattr(meta, "shape") else None
