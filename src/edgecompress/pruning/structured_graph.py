"""The dependency graph of structured pruning: Torch-Pruning's DependencyGraph, told what it cannot see by itself.

- Modules it must not trace through become single nodes (``structured_opaque``).
- A channel shuffle (F.channel_shuffle, nn.ChannelShuffle, or reshape → transpose → reshape) permutes channels;
  Torch-Pruning would read it as a flatten. It gets a permutation index mapping (``Shuffle``).
- Splits and concatenations get their sizes from what autograd saved (Torch-Pruning's guesses fail on ShuffleNet's
  channel split), and concatenation offsets follow the cuts (``Concat``).
- Any reshape that splits or merges the channel dimension, slice with fixed bounds, or split into fixed sizes is
  reported (``reshape_problem``, ``slice_problem``, ``Graph.problems``) so that the groups passing through it stay
  whole."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch_pruning as tp
from torch import nn
from torch_pruning._helpers import _HybridIndex
from torch_pruning.dependency import Dependency, Node
from torch_pruning.dependency.index_mapping import _ConcatIndexMapping

from ..errors import UnsupportedError
from .structured_opaque import (
    AttentionLayout,
    AttentionPruner,
    OpaquePruner,
    RecurrentPruner,
    find_attention,
    opaque_modules,
    single_nodes,
)

# --- channel shuffles and other reshapes -------------------------------------------------------------------------

def _shapes(node: Node) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
    """(input shape, output shape) of a view/reshape node, from what autograd saved."""
    fn = node.grad_fn
    try:
        return tuple(int(s) for s in fn._saved_self_sym_sizes), tuple(int(s) for s in fn._input_metadata[0].shape)
    except (AttributeError, IndexError, TypeError):
        return None


class Shuffle:
    """A channel shuffle in groups of ``groups``: input channel k·(c/g) + j becomes output channel j·g + k. Its nodes
    carry indices in input numbering; ``channels`` follows the cuts so that the permutation stays right."""

    def __init__(self, first: Node, groups: int, channels: int) -> None:
        self.first, self.groups, self.channels = first, groups, channels

    def to_output(self, i: int) -> int:
        size = self.channels // self.groups
        return (i % size) * self.groups + i // size

    def to_input(self, o: int) -> int:
        return (o % self.groups) * (self.channels // self.groups) + o // self.groups


class _ShuffleMapping:
    def __init__(self, shuffle: Shuffle, forward: bool) -> None:
        self.map = shuffle.to_output if forward else shuffle.to_input

    def __call__(self, idxs: list[_HybridIndex]) -> list[_HybridIndex]:
        return [_HybridIndex(idx=self.map(i.idx), root_idx=i.root_idx) for i in idxs]


def _only_output(node: Node) -> Node | None:
    outputs = list(dict.fromkeys(node.outputs))
    return outputs[0] if len(outputs) == 1 else None


def _shuffle_chain(first: Node) -> tuple[list[Node], int, int] | None:
    """reshape (B, C, …) → (B, g, C/g, …), swap dims 1 and 2 (copies allowed), reshape back to (B, C, …)."""
    shapes = _shapes(first)
    if shapes is None:
        return None
    (before, split) = shapes
    if len(split) != len(before) + 1 or split[0] != before[0] or split[1] * split[2] != before[1] \
            or split[3:] != before[2:] or split[1] < 2:
        return None
    chain, node, swapped = [first], _only_output(first), False
    while node is not None and node.type == tp.ops.OPTYPE.ELEMENTWISE:
        fn = node.grad_fn
        name = fn.name() if hasattr(fn, "name") else ""
        if name.startswith("TransposeBackward") and {fn._saved_dim0, fn._saved_dim1} == {1, 2} and not swapped:
            swapped = True
        elif name.startswith("PermuteBackward") and tuple(fn._saved_dims)[:3] == (0, 2, 1) and not swapped:
            swapped = True
        elif not name.startswith("CloneBackward"):
            return None
        chain.append(node)
        node = _only_output(node)
    back = _shapes(node) if node is not None and node.type == tp.ops.OPTYPE.RESHAPE else None
    if not swapped or back is None or back != ((split[0], split[2], split[1], *split[3:]), before):
        return None
    return [*chain, node], split[1], before[1]


def _wire(chain: list[Node], shuffle: Shuffle) -> None:
    """Indices stay in input numbering along the chain and are permuted on the way out of it (and back)."""
    first, last, members = chain[0], chain[-1], set(chain)
    consumers = [n for n in last.outputs if n not in members]
    for node in chain:
        node.type = tp.ops.OPTYPE.ELEMENTWISE  # so Torch-Pruning's reshape handling leaves these nodes alone
        for dep in node.dependencies:
            dep.index_mapping[0] = _ShuffleMapping(shuffle, True) if node is last and dep.target in consumers \
                else None
    for producer in first.inputs:
        for dep in producer.dependencies:
            if dep.target is first:
                dep.index_mapping[0] = None
    for consumer in consumers:
        for dep in consumer.dependencies:
            if dep.target is last:
                dep.index_mapping[0] = _ShuffleMapping(shuffle, False)


def _find_shuffles(dg: tp.DependencyGraph) -> list[Shuffle]:
    shuffles = []
    for node in list(dg.module2node.values()):
        fn = node.grad_fn
        name = fn.name() if fn is not None and hasattr(fn, "name") else ""
        if name.startswith("ChannelShuffleBackward"):
            chain, groups, channels = [node], int(fn._saved_groups), int(fn._input_metadata[0].shape[1])
        elif node.type == tp.ops.OPTYPE.RESHAPE and (found := _shuffle_chain(node)) is not None:
            chain, groups, channels = found
        else:
            continue
        shuffle = Shuffle(node, groups, channels)
        _wire(chain, shuffle)
        shuffles.append(shuffle)
    return shuffles


def reshape_problem(node: Node, channels: int) -> str | None:
    """Why Torch-Pruning cannot follow ``channels`` channels through this reshape, or None. It can when the channel
    dimension survives whole, or when everything after the batch is flattened channel-first before a Linear."""
    shapes = _shapes(node)
    if shapes is None:
        return "its channels pass through a reshape whose shapes are unknown"
    before, after = shapes

    def whole(shape: tuple[int, ...]) -> set[int]:  # element counts before each dimension that has the channels
        return {_product(shape[:k]) for k, size in enumerate(shape) if size == channels}

    flatten = len(after) == 2 and after == (before[0], _product(before[1:])) and channels in (before[1], after[1])
    if flatten or whole(before) & whole(after):
        return None
    return f"its channels pass through a reshape {before} → {after} that splits or merges them"


def _product(sizes: Sequence[int]) -> int:
    result = 1
    for s in sizes:
        result *= s
    return result


def _fix_splits(dg: tp.DependencyGraph, problems: dict[Node, str]) -> set[Node]:
    """Torch-Pruning reads a split's sizes from attributes older PyTorch saved (``_saved_self_sizes``) and otherwise
    guesses them from the consumers, which fails when a part goes straight into a concatenation (ShuffleNet's
    channel split). Take them from what autograd saved and order the consumers by the part they take. Only an even
    split (``chunk``) adapts to fewer channels; one with sizes written in the code cannot be cut through. Returns
    the even splits (each part must lose as many channels as the others)."""
    even = set()
    for node in dg.module2node.values():
        fn = node.grad_fn
        if node.type != tp.ops.OPTYPE.SPLIT or not hasattr(fn, "_saved_self_sym_sizes") or fn._saved_dim != 1:
            continue
        total = int(fn._saved_self_sym_sizes[1])
        if hasattr(fn, "_saved_split_sizes"):
            sizes = [int(s) for s in fn._saved_split_sizes]
        else:
            step = int(fn._saved_split_size)
            sizes = [min(step, total - start) for start in range(0, total, step)]
        parts = [next((nr for f, nr in getattr(c.grad_fn, "next_functions", ()) if f is fn), None)
                 for c in node.outputs]
        if None in parts or sorted(parts) != list(range(len(sizes))):
            problems[node] = "its channels pass through a split whose parts are used more than once or not at all"
            continue
        if hasattr(fn, "_saved_split_sizes") or len(set(sizes)) > 1:
            problems[node] = f"its channels pass through a split into fixed sizes {sizes}"
            continue
        node.outputs = [c for _, c in sorted(zip(parts, node.outputs, strict=True), key=lambda pair: pair[0])]
        node.module.split_sizes = sizes
        even.add(node)
    return even


def slice_problem(node: Node, channels: int) -> str | None:
    """A slice of the channels has its bounds written in the code: they would not follow a cut."""
    fn = node.grad_fn
    try:
        dim, shape = int(fn._saved_dim), tuple(int(s) for s in fn._saved_self_sym_sizes)
    except (AttributeError, TypeError):
        return "its channels pass through a slice whose shape is unknown"
    if shape[dim] == channels:
        return f"its channels pass through a slice [{fn._saved_start}:{fn._saved_end}] with fixed bounds"
    return None


class Concat:
    """A concatenation along the channels and where each input's channels land in it, kept current as cuts shrink
    them (Torch-Pruning infers the sizes from the layers downstream, which fails when a split or a shuffle follows,
    and then silently maps every input to the start)."""

    def __init__(self, node: Node, parts: list[list]) -> None:
        self.node, self.parts = node, parts  # [input node or None (a tensor without gradient), channels]

    def install(self) -> None:
        start = 0
        for part, size in self.parts:
            if part is not None:
                span = [start, start + size]
                for dep in self.node.dependencies:
                    if dep.target is part:
                        dep.index_mapping[1] = _ConcatIndexMapping(offset=span, reverse=True)
                for dep in part.dependencies:
                    if dep.target is self.node:
                        dep.index_mapping[1] = _ConcatIndexMapping(offset=span, reverse=False)
            start += size

    def remove(self, idxs: Sequence[int]) -> None:
        start = 0
        for part in self.parts:
            end = start + part[1]
            part[1] -= sum(start <= i < end for i in idxs)
            start = end


def _channels_into(dg: tp.DependencyGraph, producer: Node, consumer: Node) -> int | None:
    """Channels ``producer`` hands ``consumer``: one part of a split, else what Torch-Pruning infers upstream."""
    if producer.type == tp.ops.OPTYPE.SPLIT and producer.module.split_sizes:
        return producer.module.split_sizes[producer.outputs.index(consumer)]
    return tp.dependency.shape_infer.infer_out_channels_recursively(dg, producer, [0])


def _find_concats(dg: tp.DependencyGraph, problems: dict[Node, str]) -> list[Concat]:
    by_fn = {node.grad_fn: node for node in dg.module2node.values() if node.grad_fn is not None}
    concats = []
    for node in dg.module2node.values():
        if node.type != tp.ops.OPTYPE.CONCAT:
            continue
        fn = node.grad_fn
        out_shape = tuple(int(s) for s in fn._input_metadata[0].shape)
        dim = int(fn._saved_dim) % len(out_shape)
        parts = []
        for f, nr in fn.next_functions:
            shape = f.variable.shape if hasattr(f, "variable") else f._input_metadata[nr].shape if f else None
            parts.append([by_fn.get(f), int(shape[dim]) if shape is not None else None])
        unknown = [p for p in parts if p[1] is None]
        if len(unknown) == 1:
            unknown[0][1] = out_shape[dim] - sum(p[1] for p in parts if p[1] is not None)
        inputs = [p[0] for p in parts if p[0] is not None]
        known = [(p[1], _channels_into(dg, p[0], node)) for p in parts if p[0] is not None]
        known = [(size, channels) for size, channels in known if channels]
        if len(set(inputs)) < len(inputs) or len(unknown) > 1 or not known:
            problems[node] = "its channels pass through a concatenation whose inputs cannot be told apart"
        elif all(size == channels for size, channels in known):
            concats.append(Concat(node, parts))
        else:  # along another dimension (tokens): every input has all the channels
            node.enable_index_mapping = False
    for concat in concats:  # only now: the inference above relies on Torch-Pruning's view of every concatenation
        concat.node.type = tp.ops.OPTYPE.ELEMENTWISE  # so its own concat handling leaves the node alone …
        concat.node.module.concat_sizes = None  # … and its concat pruner does nothing; ``Concat.remove`` keeps count
    return concats


# --- the graph ---------------------------------------------------------------------------------------------------

@dataclass
class Graph:
    model: nn.Module
    dg: tp.DependencyGraph
    attention: dict[str, AttentionLayout]
    shuffles: list[Shuffle]
    concats: list[Concat]
    splits: set[Node]  # even splits: every part loses as many channels
    problems: dict[Node, str]  # nodes whose channels cannot be followed, and why

    def name(self, target: object) -> str | None:
        if isinstance(target, nn.Parameter):
            return self.dg._param_to_name.get(target)
        return self.dg._module2name.get(target)

    def is_out(self, dep: Dependency) -> bool:
        return self.dg.is_out_channel_pruning_fn(dep.handler)

    def shuffle_at(self, node: Node) -> Shuffle | None:
        return next((s for s in self.shuffles if s.first is node), None)

    def refresh(self) -> None:
        """Bring concatenation and split offsets up to date before indices are mapped (Torch-Pruning's split pruner
        updates the sizes but not the offsets)."""
        for concat in self.concats:
            concat.install()
        for node in self.dg.module2node.values():
            sizes = getattr(node.module, "split_sizes", None) if node.type == tp.ops.OPTYPE.SPLIT else None
            if sizes:
                node.module.offsets = [sum(sizes[:i]) for i in range(len(sizes) + 1)]

    def after_cut(self, items: Iterable) -> None:
        """Follow a cut (group items with indices in the numbering before it) in shuffles and concatenations."""
        for item in items:
            if (shuffle := self.shuffle_at(item.dep.target)) is not None:
                shuffle.channels -= len(item.idxs)
            for concat in self.concats:
                if concat.node is item.dep.target:
                    concat.remove(item.idxs)


@contextmanager
def modes_kept(model: nn.Module, *, eval_mode: bool = False) -> Iterator[None]:
    """Restore every module's train/eval flag afterwards (Torch-Pruning's tracing switches the model to eval)."""
    modes = {m: m.training for m in model.modules()}
    if eval_mode:
        model.eval()
    try:
        yield
    finally:
        for module, training in modes.items():
            module.training = training


def build_graph(model: nn.Module, inputs: tuple[torch.Tensor, ...]) -> Graph:
    attention = find_attention(model)
    opaque = opaque_modules(model, attention)
    attention_pruner = AttentionPruner({model.get_submodule(n): layout for n, layout in attention.items()})
    recurrent_pruner, unknown_pruner = RecurrentPruner(), OpaquePruner()
    pruners: dict[type, OpaquePruner] = {}
    for name, module in opaque.items():
        if isinstance(module, nn.MultiheadAttention):
            continue  # one node, pruned by Torch-Pruning's own pruner
        kind = (attention_pruner if name in attention else
                recurrent_pruner if isinstance(module, nn.RNNBase) else unknown_pruner)
        if pruners.setdefault(type(module), kind) is not kind:
            raise UnsupportedError(f"structured pruning: instances of {type(module).__name__} differ in layout "
                                   f"({name}); cannot treat them alike")
    forward: Callable = lambda m, x: m(*x)  # noqa: E731 — Torch-Pruning's fallback would hide a failing forward
    with modes_kept(model), single_nodes(opaque.values()), warnings.catch_warnings(), torch.enable_grad():
        warnings.simplefilter("ignore")  # it warns about every op it treats as element-wise
        dg = tp.DependencyGraph().build_dependency(model, example_inputs=inputs, forward_fn=forward,
                                                   customized_pruners=pruners, verbose=False)
    problems: dict[Node, str] = {}
    splits = _fix_splits(dg, problems)
    graph = Graph(model, dg, attention, _find_shuffles(dg), _find_concats(dg, problems), splits, problems)
    graph.refresh()
    return graph
