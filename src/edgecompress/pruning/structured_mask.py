"""Structured pruning as zeros: everything a cut would remove, set to zero in a same-shape model. Where the removed
channels pass only through per-channel operations it computes exactly what the pruned model computes, which is how
the surgery is tested (and how a soft, reversible structured prune can be held during training)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch_pruning.dependency import Dependency

from ..errors import UnsupportedError
from .structured_graph import Graph
from .structured_opaque import CONV, AttentionLayout, OpaquePruner, is_depthwise, zero_linear

_NORMS = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm, nn.modules.instancenorm._InstanceNorm, nn.PReLU)


def _zero_conv(conv: nn.modules.conv._ConvNd, idxs: list[int], *, out: bool) -> None:
    weight = conv.weight.data
    if conv.transposed:  # weight is (in, out / groups, …)
        if conv.groups != 1:
            raise UnsupportedError("mask_structured: grouped transposed convolutions are not supported")
        if out:
            weight[:, idxs] = 0
        else:
            weight[idxs] = 0
    elif out or is_depthwise(conv):
        weight[idxs] = 0
    else:  # input channel c of a grouped conv feeds only the filters of its group
        per_in, per_out = weight.shape[1], conv.out_channels // conv.groups
        for c in idxs:
            g, local = divmod(c, per_in)
            weight[g * per_out:(g + 1) * per_out, local] = 0
    if (out or is_depthwise(conv)) and conv.bias is not None:
        conv.bias.data[idxs] = 0


def _zero_mha(mha: nn.MultiheadAttention, idxs: list[int]) -> None:
    if not mha._qkv_same_embed_dim:
        raise UnsupportedError("mask_structured: nn.MultiheadAttention with separate key/value widths")
    width = mha.embed_dim
    rows = [i + part * width for part in range(3) for i in idxs]
    mha.in_proj_weight.data[rows] = 0
    mha.in_proj_weight.data[:, idxs] = 0
    if mha.in_proj_bias is not None:
        mha.in_proj_bias.data[rows] = 0
    zero_linear(mha.out_proj, idxs, out=True)
    zero_linear(mha.out_proj, idxs, out=False)
    for extra in (mha.bias_k, mha.bias_v):
        if extra is not None:
            extra.data[..., idxs] = 0


@torch.no_grad()
def zero_channels(graph: Graph, dep: Dependency, idxs: Sequence[int]) -> None:
    """Zero what ``dep``'s pruning function would remove: a producer's filters and bias, a norm's scale and shift
    (so the channel is exactly zero whatever its running statistics), a consumer's input columns."""
    target, out, idxs = dep.target.module, graph.is_out(dep), list(idxs)
    pruner = dep.handler.__self__
    if not idxs:
        return
    if isinstance(pruner, OpaquePruner):
        (pruner.mask_out_channels if out else pruner.mask_in_channels)(target, idxs)
    elif isinstance(target, nn.Parameter):
        target.data.index_fill_(dep.target.pruning_dim, torch.tensor(idxs), 0)
    elif isinstance(target, CONV):
        _zero_conv(target, idxs, out=out)
    elif isinstance(target, nn.Linear):
        zero_linear(target, idxs, out=out)
    elif isinstance(target, nn.MultiheadAttention):
        _zero_mha(target, idxs)
    elif isinstance(target, _NORMS):
        for p in (target.weight, getattr(target, "bias", None)):
            if p is not None and p.numel() > 1:
                p.data[idxs] = 0
    elif isinstance(target, nn.Embedding):
        target.weight.data[:, idxs] = 0
    elif isinstance(target, nn.Module) and any(True for _ in target.parameters(False)):
        raise UnsupportedError(f"mask_structured cannot zero channels of {type(target).__name__}")
    # anything else (concatenation, split, reshape, element-wise ops) holds no weights


@torch.no_grad()
def zero_heads(module: nn.Module, layout: AttentionLayout, idxs: Sequence[int]) -> None:
    for layer, rows, _ in layout.rows(module, idxs):
        zero_linear(layer, rows, out=True)
    zero_linear(layout.output(module), idxs, out=False)
