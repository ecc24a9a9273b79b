"""Modules the dependency graph of structured pruning sees as single nodes, and how their channels are cut.

Torch-Pruning traces through every module it has no pruner for and treats unknown ops as element-wise, which is wrong
for recurrent layers (it would prune their weights along an arbitrary dimension), for nn.MultiheadAttention's
internal reshapes, and for hand-written attention (a fused qkv projection read as 3 × the channels). Each such module
runs, while the graph is traced, through a junction that joins its outputs straight to its inputs; a pruner tells
the graph which of its sides can be cut: recurrent layers their inputs, hand-written attention both (its heads are cut
separately), any other leaf module with weights neither."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch_pruning as tp
from torch import nn
from torch.utils._pytree import tree_flatten, tree_unflatten
from torch_pruning.pruner import function as tpf

from ..errors import UnsupportedError

CONV = nn.modules.conv._ConvNd


def is_depthwise(conv: nn.Module) -> bool:
    return isinstance(conv, CONV) and conv.groups == conv.out_channels > 1

# --- hand-written attention ------------------------------------------------------------------------------------

_HEAD_ATTRS = ("num_heads", "heads", "n_heads")
_QKV_LAYOUTS = (("qkv",), ("q", "k", "v"), ("q_proj", "k_proj", "v_proj"), ("query", "key", "value"))
_OUT_NAMES = ("proj", "out_proj", "o_proj", "out", "o", "dense")


@dataclass(frozen=True)
class AttentionLayout:
    """Where a hand-written multi-head attention keeps its parts: the head-count attribute, the q/k/v projections
    (one fused Linear with q, k and v stacked in that order, or three), and the output projection."""

    heads_attr: str
    qkv: tuple[str, ...]
    out: str

    def projections(self, module: nn.Module) -> list[nn.Linear]:
        return [getattr(module, name) for name in self.qkv]

    def output(self, module: nn.Module) -> nn.Linear:
        return getattr(module, self.out)

    def heads(self, module: nn.Module) -> int:
        return getattr(module, self.heads_attr)

    def rows(self, module: nn.Module, inner: Sequence[int]) -> list[tuple[nn.Linear, list[int], list[int]]]:
        """(projection, its rows, the inner dimension each row computes) for the given inner (head × head size)
        dimensions."""
        width = self.output(module).in_features
        if len(self.qkv) == 1:
            return [(self.projections(module)[0], [part * width + i for part in range(3) for i in inner],
                     [i for _ in range(3) for i in inner])]
        return [(layer, list(inner), list(inner)) for layer in self.projections(module)]

    def consistent(self, module: nn.Module) -> bool:
        heads, width = self.heads(module), self.output(module).in_features
        projections = self.projections(module)
        widths = [p.out_features for p in projections]
        if heads < 1 or width % heads or len({p.in_features for p in projections}) != 1:
            return False
        return widths == [3 * width] if len(projections) == 1 else widths == [width] * 3


def find_attention(model: nn.Module) -> dict[str, AttentionLayout]:
    """Hand-written attention modules: an integer ``num_heads``/``heads``/``n_heads`` attribute, Linear q/k/v
    projections (``qkv``, or ``q``/``k``/``v``, ``q_proj``/…, ``query``/``key``/``value``) and an output Linear
    (``proj``, ``out_proj``, ``o_proj``, ``out``, ``o`` or ``dense``), with consistent widths."""
    found = {}
    for name, module in model.named_modules():
        if isinstance(module, nn.MultiheadAttention):
            continue  # Torch-Pruning prunes it natively
        heads_attr = next((a for a in _HEAD_ATTRS if type(getattr(module, a, None)) is int), None)
        children = dict(module.named_children())
        qkv = next((names for names in _QKV_LAYOUTS if all(isinstance(children.get(n), nn.Linear) for n in names)),
                   None)
        out = next((n for n in _OUT_NAMES if isinstance(children.get(n), nn.Linear)), None)
        if heads_attr and qkv and out:
            layout = AttentionLayout(heads_attr, qkv, out)
            if layout.consistent(module):
                found[name] = layout
    return found


# --- modules the dependency graph sees as one node ---------------------------------------------------------------

def zero_linear(layer: nn.Linear, idxs: Sequence[int], *, out: bool) -> None:
    if out:
        layer.weight.data[list(idxs)] = 0
        if layer.bias is not None:
            layer.bias.data[list(idxs)] = 0
    else:
        layer.weight.data[:, list(idxs)] = 0


class OpaquePruner(tpf.BasePruningFunc):
    """A module the dependency graph sees as a single node. This base knows nothing of the module's weights, so any
    group of channels that would have to cut it is left whole (``can_cut``)."""

    def can_cut(self, layer: nn.Module, out: bool) -> bool:
        return False

    def _refuse(self, layer: nn.Module, *_: object) -> nn.Module:
        raise UnsupportedError(f"structured pruning cannot remove channels of {type(layer).__name__}")

    prune_out_channels = prune_in_channels = mask_out_channels = mask_in_channels = _refuse

    def get_out_channels(self, layer: nn.Module) -> int | None:
        return None

    def get_in_channels(self, layer: nn.Module) -> int | None:
        return None


class RecurrentPruner(OpaquePruner):
    """nn.RNN / GRU / LSTM: the input features can be cut (columns of the first layer's input weights). The hidden
    size is kept: Torch-Pruning's LSTM pruner slices the gate biases and the recurrent weights inconsistently."""

    def can_cut(self, layer: nn.Module, out: bool) -> bool:
        return not out

    @staticmethod
    def _input_weights(layer: nn.RNNBase) -> list[str]:
        return [f"weight_ih_l0{suffix}" for suffix in (("", "_reverse") if layer.bidirectional else ("",))]

    def prune_in_channels(self, layer: nn.RNNBase, idxs: Sequence[int]) -> nn.Module:
        removed = set(idxs)
        keep = [i for i in range(layer.input_size) if i not in removed]
        for name in self._input_weights(layer):
            weight = getattr(layer, name)
            setattr(layer, name, nn.Parameter(weight.data[:, keep].clone(), requires_grad=weight.requires_grad))
        layer.input_size = len(keep)  # RNNBase.__setattr__ keeps its flat weight list in step
        return layer

    def mask_in_channels(self, layer: nn.RNNBase, idxs: Sequence[int]) -> nn.Module:
        for name in self._input_weights(layer):
            getattr(layer, name).data[:, list(idxs)] = 0
        return layer

    def get_in_channels(self, layer: nn.RNNBase) -> int:
        return layer.input_size

    def get_out_channels(self, layer: nn.RNNBase) -> int:
        width = getattr(layer, "proj_size", 0) or layer.hidden_size
        return width * (2 if layer.bidirectional else 1)


class AttentionPruner(OpaquePruner):
    """Hand-written attention seen from outside: its input channels are the q/k/v projections' columns, its output
    channels the output projection's rows. Its heads (inside) are cut separately."""

    def __init__(self, layouts: dict[nn.Module, AttentionLayout]) -> None:
        super().__init__()
        self.layouts = layouts

    def can_cut(self, layer: nn.Module, out: bool) -> bool:
        return True

    def prune_in_channels(self, layer: nn.Module, idxs: Sequence[int]) -> nn.Module:
        for projection in self.layouts[layer].projections(layer):
            tpf.prune_linear_in_channels(projection, list(idxs))
        return layer

    def prune_out_channels(self, layer: nn.Module, idxs: Sequence[int]) -> nn.Module:
        tpf.prune_linear_out_channels(self.layouts[layer].output(layer), list(idxs))
        return layer

    def mask_in_channels(self, layer: nn.Module, idxs: Sequence[int]) -> nn.Module:
        for projection in self.layouts[layer].projections(layer):
            zero_linear(projection, idxs, out=False)
        return layer

    def mask_out_channels(self, layer: nn.Module, idxs: Sequence[int]) -> nn.Module:
        zero_linear(self.layouts[layer].output(layer), idxs, out=True)
        return layer

    def get_in_channels(self, layer: nn.Module) -> int:
        return self.layouts[layer].projections(layer)[0].in_features

    def get_out_channels(self, layer: nn.Module) -> int:
        return self.layouts[layer].output(layer).out_features


class _Junction(torch.autograd.Function):
    """Joins a module's outputs straight to its inputs in the autograd graph, so the dependency graph neither walks
    through the module's internals nor misses an output computed off the main path (an RNN's final state)."""

    @staticmethod
    def forward(ctx, n_inputs: int, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        ctx.n_tensors = len(tensors)
        return tuple(t.clone() for t in tensors[n_inputs:])

    @staticmethod
    def backward(ctx, *grads: torch.Tensor) -> tuple[None, ...]:
        return (None,) * (ctx.n_tensors + 1)  # only traced, never differentiated


@contextmanager
def single_nodes(modules: Iterable[nn.Module]) -> Iterator[None]:
    """While the graph is traced, each module computes without autograd and hands its outputs through a junction."""

    def joined(forward):
        def run(*args, **kwargs):
            with torch.no_grad():
                out = forward(*args, **kwargs)
            inputs = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
            leaves, spec = tree_flatten(out)
            slots = [i for i, t in enumerate(leaves) if isinstance(t, torch.Tensor) and t.is_floating_point()]
            for i, tensor in zip(slots, _Junction.apply(len(inputs), *inputs, *(leaves[i] for i in slots)),
                                 strict=True):
                leaves[i] = tensor
            return tree_unflatten(leaves, spec)
        return run

    patched = {module: module.__dict__.get("forward") for module in modules}  # a forward set on the instance, if any
    for module in patched:
        module.forward = joined(module.forward)
    try:
        yield
    finally:
        for module, own in patched.items():
            if own is None:
                del module.forward  # the class's forward shows through again
            else:
                module.forward = own


def opaque_modules(model: nn.Module, attention: dict[str, AttentionLayout]) -> dict[str, nn.Module]:
    found: dict[str, nn.Module] = {}
    for name, module in model.named_modules():
        if any(name.startswith(f"{outer}.") for outer in found):
            continue  # inside a module that is already one node
        unknown_weights = (next(module.children(), None) is None and any(True for _ in module.parameters(False))
                           and tp.ops.module2type(module) == tp.ops.OPTYPE.ELEMENTWISE)
        if name in attention or isinstance(module, (nn.RNNBase, nn.MultiheadAttention)) or unknown_weights:
            found[name] = module
    return found
