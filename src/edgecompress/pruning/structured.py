"""Structured pruning with physical removal: whole channels, hidden units and attention heads leave the model, which
comes back smaller and dense (fewer MACs and bytes on every runtime, not zeros a runtime still multiplies).

Split as Torch-Pruning splits it: the graph (``structured_graph``: its DependencyGraph, which couples layers through
residual adds, concatenation, split, shuffle, depthwise and grouped convs, norms, squeeze-excitation gates and
attention), importance (``structured_importance``: its criteria, scored per group of coupled channels), the ranking
(scope, floors, rounding, whole heads: here) and surgery (its pruning functions, here). Planning is separate from
surgery so that a plan can also be applied as zeros (``structured_mask``, ``mask_structured``)."""

from __future__ import annotations

import copy
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace

import torch
import torch_pruning as tp
from torch import nn
from torch.utils._pytree import tree_flatten
from torch_pruning.dependency import Dependency, Group, Node
from torch_pruning.pruner import function as tpf

from ..errors import DataError, RecipeError, UnsupportedError
from ..layers import count_macs, matches
from .structured_config import StructuredPruneConfig
from .structured_graph import Graph, build_graph, modes_kept, reshape_problem, slice_problem
from .structured_importance import Batch, accumulate_gradients, criterion_for
from .structured_mask import zero_channels, zero_heads
from .structured_opaque import CONV, AttentionLayout, OpaquePruner, is_depthwise

# --- candidates: coupled channels, and attention heads ------------------------------------------------------------

Unit = list[tuple[int, int]]  # (which root of the candidate, channel of that root): removed together


@dataclass
class _Candidate:
    """Channels ranked together: the output channels of one or more roots (several when a shuffle or a grouped conv
    ties channels of different groups), or the inner dimensions of a hand-written attention. Every layer the units
    shrink is tracked (``widths``) so that none falls below its floor: a root's outputs, but also a consumer fed by
    one part of a split."""

    kind: str  # "channels" | "heads"
    roots: list[str]
    channels: list[int]
    units: list[Unit]
    scores: torch.Tensor  # one per unit; the lowest go first
    widths: list[int]  # channels of each tracked layer (side) before the cut
    floors: list[int]  # … and the fewest it may keep
    hits: list[dict[int, int]]  # per unit: tracked layer → channels the unit takes from it


def _is_ignored(name: str | None, patterns: tuple[str, ...]) -> bool:
    if not name or not patterns:
        return False
    parts = name.split(".")
    return any(matches(".".join(parts[:i]), patterns) for i in range(1, len(parts) + 1))


def _blocked(graph: Graph, group: Group, ignore: tuple[str, ...], protected: set[str]) -> str | None:
    """Why a group of coupled channels must stay whole, or None."""
    for dep, idxs in group:
        target, out = dep.target, graph.is_out(dep)
        name = graph.name(target.module)
        if out and not target.outputs:  # nothing consumes it: it is a model output
            protected.update(graph.name(d.target.module) for d, _ in group
                             if graph.is_out(d) and isinstance(d.target.module, (CONV, nn.Linear)))
            return "its channels are model outputs"
        if _is_ignored(name, ignore):
            return f"it is coupled to the ignored {name}"
        pruner = dep.handler.__self__
        if isinstance(pruner, OpaquePruner) and not pruner.can_cut(target.module, out):
            side = "output" if out else "input"
            return f"it is coupled to the {side} of {name} ({type(target.module).__name__}), which cannot be cut"
        if target in graph.problems:
            return graph.problems[target]
        if target.type == tp.ops.OPTYPE.RESHAPE and (problem := reshape_problem(target, len(idxs))):
            return problem
        if target.type == tp.ops.OPTYPE.SLICE and (problem := slice_problem(target, len(idxs))):
            return problem
    return None


def _period(graph: Graph, dep: Dependency, prune_heads: bool) -> tuple[Callable[[int], int], int] | None:
    """How a layer constrains the channels it loses: (class of a channel, channels per class); each class goes whole
    or not at all. Grouped convs, shuffles and even splits lose the same positions in every group (part), attention
    whole heads or the same positions in every head."""
    module = dep.target.module
    if isinstance(module, CONV) and module.groups > 1 and not is_depthwise(module):
        size = (module.out_channels if graph.is_out(dep) else module.in_channels) // module.groups
        return (lambda t: t % size), module.groups
    if isinstance(module, nn.MultiheadAttention):
        size = module.embed_dim // module.num_heads
        return ((lambda t: t // size), size) if prune_heads else ((lambda t: t % size), module.num_heads)
    shuffle = graph.shuffle_at(dep.target)
    if shuffle is not None:
        size = shuffle.channels // shuffle.groups
        return (lambda t: t % size), shuffle.groups
    if dep.target in graph.splits:
        sizes = module.split_sizes
        return (lambda t: t % sizes[0]), len(sizes)
    return None


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict[tuple[int, int], tuple[int, int]] = {}

    def find(self, x: tuple[int, int]) -> tuple[int, int]:
        self.parent.setdefault(x, x)
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, members: list[tuple[int, int]]) -> None:
        for m in members[1:]:
            self.parent[self.find(m)] = self.find(members[0])


def _coupled_units(graph: Graph, groups: list[Group], prune_heads: bool, pinned: set[tuple[int, int]]
                   ) -> list[list[tuple[int, int]]]:
    """(group, root channel) pairs in sets that must be removed together: every constrained layer's classes, followed
    through concatenations, splits and shuffles, possibly across groups. A set touching a pinned pair (a group that
    must stay whole, or a class member no group owns) can never go and is left out."""
    links, classes = _UnionFind(), defaultdict(list)
    for g, group in enumerate(groups):
        for item in group.items:
            rule = _period(graph, item.dep, prune_heads)
            if rule is None:
                continue
            key, members = rule
            for t, r in zip(item.idxs, item.root_idxs, strict=True):
                if r is not None:
                    classes[(id(item.dep.target), graph.is_out(item.dep), key(t), members)].append((t, (g, r)))
    for (*_, members), found in classes.items():
        pairs = [pair for _, pair in found]
        links.union(pairs)
        if len({t for t, _ in found}) < members:
            pinned.update(pairs)
    sets: dict[tuple[int, int], list[tuple[int, int]]] = defaultdict(list)
    for g, group in enumerate(groups):
        for r in range(graph.dg.get_out_channels(group[0].dep.target.module)):
            sets[links.find((g, r))].append((g, r))
    return [s for s in sets.values() if not pinned.intersection(s)]


def _tracked(graph: Graph, groups: list[Group], members: tuple[int, ...], units: list[list[tuple[int, int]]],
             min_channels: int) -> tuple[list[int], list[int], list[dict[int, int]]]:
    """The layers the units shrink, their widths and floors (outputs: ``min_channels``; inputs: one), and what each
    unit takes from each."""
    keys: dict[tuple[int, bool], int] = {}
    widths, floors = [], []
    reach: dict[tuple[int, int], set[tuple[int, int]]] = defaultdict(set)  # (group, root channel) → (layer, channel)
    for g in members:
        for item in groups[g].items:
            module, out = item.dep.target.module, graph.is_out(item.dep)
            if not isinstance(module, (CONV, nn.Linear, nn.MultiheadAttention)) and \
                    not isinstance(item.dep.handler.__self__, OpaquePruner):
                continue
            key = (id(item.dep.target), out)
            if key not in keys:
                keys[key] = len(widths)
                width = graph.dg.get_out_channels(module) if out else graph.dg.get_in_channels(module)
                widths.append(width)
                floors.append(min(width, max(1, min_channels) if out else 1))
            for t, r in zip(item.idxs, item.root_idxs, strict=True):
                reach[(g, r)].add((keys[key], t))
    hits = []
    for unit in units:
        counts: dict[int, int] = defaultdict(int)
        for k, _ in set().union(*(reach[pair] for pair in unit)):
            counts[k] += 1
        hits.append(dict(counts))
    return widths, floors, hits


def _channel_candidates(graph: Graph, config: StructuredPruneConfig, criterion: tp.importance.Importance,
                        protected: set[str], skipped: dict[str, str]) -> list[_Candidate]:
    groups = list(graph.dg.get_all_groups(root_module_types=(CONV, nn.Linear)))
    roots = [graph.name(group[0].dep.target.module) for group in groups]
    channels = [graph.dg.get_out_channels(group[0].dep.target.module) for group in groups]
    pinned, scores = set(), {}
    for g, group in enumerate(groups):
        reason = _blocked(graph, group, config.ignore, protected)
        imp = criterion(group) if reason is None else None
        if reason is None and imp is None:
            reason = f"{config.importance} importance cannot score it"
        if reason is not None:
            skipped[roots[g]] = reason
            pinned.update((g, r) for r in range(channels[g]))
        else:
            scores[g] = imp
    by_groups: dict[tuple[int, ...], list[list[tuple[int, int]]]] = defaultdict(list)
    for unit in _coupled_units(graph, groups, config.prune_heads, pinned):
        by_groups[tuple(sorted({g for g, _ in unit}))].append(unit)
    candidates, covered = [], set()
    for members, units in _merge_overlapping(by_groups).items():
        position = {g: p for p, g in enumerate(members)}
        covered.update(members)
        candidates.append(_Candidate(
            "channels", [roots[g] for g in members], [channels[g] for g in members],
            [[(position[g], r) for g, r in unit] for unit in units],
            torch.stack([torch.stack([scores[g][r].float() for g, r in unit]).mean() for unit in units]),
            *_tracked(graph, groups, members, units, config.min_channels)))
    for g, root in enumerate(roots):
        if g in scores and g not in covered:
            skipped[root] = "its channels are tied to channels that must stay (grouped convolution, head or shuffle)"
    return candidates


def _merge_overlapping(by_groups: dict[tuple[int, ...], list[Unit]]) -> dict[tuple[int, ...], list[Unit]]:
    """Units that share a group are ranked together, so their group's floor is counted once."""
    merged: dict[tuple[int, ...], list[Unit]] = {}
    for members, units in sorted(by_groups.items()):
        overlapping = [k for k in merged if set(k) & set(members)]
        key = tuple(sorted(set(members).union(*overlapping)))
        merged[key] = [u for k in overlapping for u in merged.pop(k)] + units
    return merged


def _head_group(graph: Graph, module: nn.Module, layout: AttentionLayout) -> Group:
    """The inside of an attention as a Torch-Pruning group (q/k/v rows and output columns per inner dimension), so
    that every criterion scores heads the way it scores channels."""
    group = Group()
    inner = list(range(layout.output(module).in_features))
    parts = [(layer, rows, roots, tpf.prune_linear_out_channels) for layer, rows, roots in layout.rows(module, inner)]
    parts.append((layout.output(module), inner, inner, tpf.prune_linear_in_channels))
    for layer, idxs, roots, fn in parts:
        node = Node(layer, None, graph.name(layer))
        group.add_dep(Dependency(fn, fn, node, node), list(idxs))
        group[len(group) - 1].root_idxs = list(roots)
    return group


def _head_candidates(graph: Graph, config: StructuredPruneConfig, criterion: tp.importance.Importance,
                     skipped: dict[str, str]) -> list[_Candidate]:
    candidates = []
    for name, layout in graph.attention.items():
        module = graph.model.get_submodule(name)
        parts = (name, *(f"{name}.{child}" for child in (*layout.qkv, layout.out)))
        if any(_is_ignored(part, config.ignore) for part in parts):
            skipped[name] = "it is ignored"
            continue
        heads, width = layout.heads(module), layout.output(module).in_features
        size = width // heads
        units = ([[(0, h * size + j) for j in range(size)] for h in range(heads)] if config.prune_heads else
                 [[(0, j + h * size) for h in range(heads)] for j in range(size)])
        imp = criterion(_head_group(graph, module, layout))
        if imp is None:
            skipped[name] = f"{config.importance} importance cannot score its heads"
            continue
        scores = torch.stack([imp[[i for _, i in unit]].float().mean() for unit in units])
        floor = min(width, max(1, config.min_channels))
        candidates.append(_Candidate("heads", [name], [width], units, scores, [width], [floor],
                                     [{0: len(unit)} for unit in units]))
    return candidates


# --- ranking -----------------------------------------------------------------------------------------------------

def _fits(candidate: _Candidate, kept: list[int], u: int) -> bool:
    """Removing unit ``u`` leaves every layer the candidate tracks at or above its floor."""
    return all(kept[k] - n >= candidate.floors[k] for k, n in candidate.hits[u].items())


def _take(candidate: _Candidate, kept: list[int], u: int) -> None:
    for k, n in candidate.hits[u].items():
        kept[k] -= n


def _lowest(candidate: _Candidate, ratio: float) -> list[int]:
    """The lowest-scored units of one candidate, up to ``ratio`` of its channels and down to its floors."""
    budget, removed, kept, chosen = int(ratio * sum(candidate.channels) + 1e-9), 0, list(candidate.widths), []
    for u in torch.argsort(candidate.scores, stable=True).tolist():
        size = len(candidate.units[u])
        if removed + size <= budget and _fits(candidate, kept, u):
            chosen.append(u)
            _take(candidate, kept, u)
            removed += size
    return chosen


def _global(candidates: list[_Candidate], ratio: float) -> list[list[int]]:
    """The lowest-scored units over the whole model until ``ratio`` of all channels are gone, skipping units that
    would take a layer below its floor."""
    budget = int(ratio * sum(sum(c.channels) for c in candidates) + 1e-9)
    pool = sorted((float(s), i, u) for i, c in enumerate(candidates) for u, s in enumerate(c.scores))
    chosen: list[list[int]] = [[] for _ in candidates]
    kept = [list(c.widths) for c in candidates]
    removed = 0
    for _, i, u in pool:
        if removed >= budget:
            break
        if _fits(candidates[i], kept[i], u):
            chosen[i].append(u)
            _take(candidates[i], kept[i], u)
            removed += len(candidates[i].units[u])
    return chosen


def _rounded(candidate: _Candidate, chosen: list[int], round_to: int) -> list[int]:
    """Give back the best removed units until every root that loses channels keeps a multiple of ``round_to``."""
    chosen = sorted(chosen, key=lambda u: float(candidate.scores[u]))

    def misaligned() -> bool:
        kept = list(candidate.channels)
        for u in chosen:
            for position, _ in candidate.units[u]:
                kept[position] -= 1
        return any(k % round_to for k, total in zip(kept, candidate.channels, strict=True) if k != total)

    while chosen and misaligned():
        chosen.pop()
    return chosen


def _select(candidates: list[_Candidate], config: StructuredPruneConfig) -> list[list[int]]:
    if config.scope == "layer":
        chosen = [_lowest(c, config.ratio) for c in candidates]
    else:
        chosen = _global(candidates, config.ratio)
    return [_rounded(c, units, config.round_to) for c, units in zip(candidates, chosen, strict=True)]


# --- the plan ----------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Cut:
    """One removal, applied at once. Kind "channels": for each root layer ``layers[i]``, its output channels
    ``indices[i]`` (of ``channels[i]``) and every channel coupled to them (residual adds, concatenation, norms, the
    next layers' inputs). Kind "heads": inner dimensions (whole heads, or the same positions in every head) of the
    hand-written attention ``layers[0]``."""

    kind: str
    layers: tuple[str, ...]
    indices: tuple[tuple[int, ...], ...]
    channels: tuple[int, ...]


@dataclass(frozen=True)
class StructuredPlan:
    """What will be removed, in original channel numbering. ``protected``: layers whose outputs are model outputs.
    ``skipped``: group root (or attention) → why it stays whole."""

    cuts: tuple[Cut, ...]
    prune_heads: bool
    protected: tuple[str, ...]
    skipped: dict[str, str]


def _as_tuple(example_inputs: tuple[torch.Tensor, ...] | torch.Tensor) -> tuple[torch.Tensor, ...]:
    return example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)


def _cut(candidate: _Candidate, chosen: list[int]) -> Cut:
    indices = [sorted(i for u in chosen for p, i in candidate.units[u] if p == position)
               for position in range(len(candidate.roots))]
    return Cut(candidate.kind, tuple(candidate.roots), tuple(tuple(i) for i in indices), tuple(candidate.channels))


def plan_structured(model: nn.Module, config: StructuredPruneConfig | None = None, *,
                    example_inputs: tuple[torch.Tensor, ...] | torch.Tensor,
                    data: Iterable[Batch] | None = None) -> StructuredPlan:
    """Choose the channels and heads to remove from ``model`` (which is not modified). ``data``, batches of
    (inputs, labels), is needed for taylor importance only."""
    config = config or StructuredPruneConfig()
    if not isinstance(config, StructuredPruneConfig):
        raise RecipeError(f"structured pruning needs a StructuredPruneConfig; got {type(config).__name__}")
    if config.importance == "taylor" and data is None:
        raise DataError("taylor importance needs labelled data (batches of inputs, labels) to compute gradients")
    work = copy.deepcopy(model)
    graph = build_graph(work, _as_tuple(example_inputs))
    if config.importance == "taylor":
        accumulate_gradients(work, data)
    criterion, protected, skipped = criterion_for(config), set(), {}
    candidates = (_channel_candidates(graph, config, criterion, protected, skipped)
                  + _head_candidates(graph, config, criterion, skipped))
    if config.ratio > 0 and not candidates:
        reasons = "; ".join(f"{name}: {why}" for name, why in skipped.items()) or "the model has no conv/linear layer"
        raise DataError(f"structured pruning found no group of channels it may remove ({reasons})")
    cuts = tuple(_cut(c, chosen) for c, chosen in zip(candidates, _select(candidates, config), strict=True) if chosen)
    return StructuredPlan(cuts, config.prune_heads, tuple(sorted(protected)), skipped)


# --- surgery -----------------------------------------------------------------------------------------------------

# Attributes a hand-written attention's forward may reshape with: updated when they hold the old head size or the
# old inner width. The softmax scale is left alone: it belongs to the function the model computes.
_HEAD_DIM_ATTRS = ("head_dim", "dim_head", "head_size", "attention_head_size")
_INNER_ATTRS = ("dim", "inner_dim", "embed_dim", "all_head_size")


def _channel_group(graph: Graph, cut: Cut) -> Group:
    """All roots' groups as one, indices merged per layer, so that every layer is cut once in its current numbering
    (two roots may share a consumer, as both halves of a shuffle do)."""
    merged: dict[tuple[int, object], tuple[Dependency, set[int]]] = {}
    graph.refresh()
    for layer, idxs in zip(cut.layers, cut.indices, strict=True):
        if not idxs:
            continue
        module = graph.model.get_submodule(layer)
        pruner = graph.dg.get_pruner_of_module(module)
        for item in graph.dg.get_pruning_group(module, pruner.prune_out_channels, list(idxs)).items:
            key = (id(item.dep.target), item.dep.handler)
            merged.setdefault(key, (item.dep, set()))[1].update(item.idxs)
    group = Group()
    for dep, idxs in merged.values():
        group.add_dep(dep, sorted(idxs))
    group._DG = graph.dg
    return group


def _cut_channels(graph: Graph, cut: Cut) -> None:
    group = _channel_group(graph, cut)
    group.prune(record_history=False)
    graph.after_cut(group.items)


def _cut_heads(module: nn.Module, layout: AttentionLayout, idxs: Sequence[int], prune_heads: bool) -> None:
    heads, width = layout.heads(module), layout.output(module).in_features
    size = width // heads
    for layer, rows, _ in layout.rows(module, idxs):
        tpf.prune_linear_out_channels(layer, rows)
    tpf.prune_linear_in_channels(layout.output(module), list(idxs))
    new_width = width - len(idxs)
    new_heads = heads - len(idxs) // size if prune_heads else heads
    setattr(module, layout.heads_attr, new_heads)
    for attrs, old, new in ((_HEAD_DIM_ATTRS, size, new_width // new_heads), (_INNER_ATTRS, width, new_width)):
        for attr in attrs:
            if type(getattr(module, attr, None)) is int and getattr(module, attr) == old:
                setattr(module, attr, new)


def apply_plan(model: nn.Module, plan: StructuredPlan, *,
               example_inputs: tuple[torch.Tensor, ...] | torch.Tensor) -> nn.Module:
    """A copy of ``model`` with the planned channels and heads physically removed."""
    pruned = copy.deepcopy(model)
    graph = build_graph(pruned, _as_tuple(example_inputs))
    head_sizes = {m: m.head_dim for m in pruned.modules() if isinstance(m, nn.MultiheadAttention)}
    for cut in plan.cuts:
        if cut.kind == "channels":
            _cut_channels(graph, cut)
        else:
            _cut_heads(pruned.get_submodule(cut.layers[0]), graph.attention[cut.layers[0]], cut.indices[0],
                       plan.prune_heads)
    if plan.prune_heads:
        # Torch-Pruning keeps nn.MultiheadAttention's head count and shrinks the head; whole heads went instead.
        for mha, size in head_sizes.items():
            mha.num_heads, mha.head_dim = mha.embed_dim // size, size
    return pruned


def mask_structured(model: nn.Module, plan: StructuredPlan, *,
                    example_inputs: tuple[torch.Tensor, ...] | torch.Tensor) -> nn.Module:
    """A same-shape copy of ``model`` in which everything ``apply_plan`` would remove is zero. Where the removed
    channels pass only through per-channel operations (not LayerNorm, which averages over them) it computes exactly
    what the pruned model computes."""
    masked = copy.deepcopy(model)
    graph = build_graph(masked, _as_tuple(example_inputs))
    for cut in plan.cuts:
        if cut.kind == "channels":
            for dep, idxs in _channel_group(graph, cut):
                zero_channels(graph, dep, idxs)
        else:
            zero_heads(masked.get_submodule(cut.layers[0]), graph.attention[cut.layers[0]], cut.indices[0])
    return masked


# --- one call: plan, cut, check, measure ------------------------------------------------------------------------

@dataclass(frozen=True)
class StructuredResult:
    """``removed``: for every conv, linear and nn.MultiheadAttention, (channels removed, channels kept)."""

    model: nn.Module
    plan: StructuredPlan
    removed: dict[str, tuple[int, int]]
    params_before: int
    params_after: int
    macs_before: int
    macs_after: int


def _widths(model: nn.Module) -> dict[str, int]:
    widths = {}
    for name, module in model.named_modules():
        if isinstance(module, CONV):
            widths[name] = module.out_channels
        elif isinstance(module, nn.Linear):
            widths[name] = module.out_features
        elif isinstance(module, nn.MultiheadAttention):
            widths[name] = module.embed_dim
    return widths


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _output_shapes(model: nn.Module, inputs: tuple[torch.Tensor, ...]) -> list[tuple[int, ...]]:
    with modes_kept(model, eval_mode=True), torch.no_grad():
        return [tuple(t.shape) for t in tree_flatten(model(*inputs))[0] if isinstance(t, torch.Tensor)]


def _first_failing_cut(model: nn.Module, plan: StructuredPlan, inputs: tuple[torch.Tensor, ...],
                       expected: list[tuple[int, ...]]) -> Cut | None:
    for k in range(1, len(plan.cuts) + 1):
        try:
            pruned = apply_plan(model, replace(plan, cuts=plan.cuts[:k]), example_inputs=inputs)
            runs = _output_shapes(pruned, inputs) == expected
        except Exception:  # any failure of the partial model points at this cut
            runs = False
        if not runs:
            return plan.cuts[k - 1]
    return None


def _check_runs(model: nn.Module, pruned: nn.Module, plan: StructuredPlan, inputs: tuple[torch.Tensor, ...]) -> None:
    expected = _output_shapes(model, inputs)
    try:
        got, error = _output_shapes(pruned, inputs), ""
    except Exception as e:  # the forward of an arbitrary model raises anything
        got, error = None, f"{type(e).__name__}: {e}"
    if got != expected:
        cut = _first_failing_cut(model, plan, inputs, expected)
        where = f"cutting {cut.kind} of {', '.join(cut.layers)}" if cut else "the pruned model"
        raise UnsupportedError(f"structured pruning breaks {type(model).__name__}: after {where} it "
                               f"{'fails: ' + error if error else f'returns shapes {got}, not {expected}'}. Add the "
                               "layer to ignore: or report the architecture")


def prune_structured(model: nn.Module, config: StructuredPruneConfig | None = None, *,
                     example_inputs: tuple[torch.Tensor, ...] | torch.Tensor,
                     data: Iterable[Batch] | None = None) -> StructuredResult:
    """Remove channels, hidden units and attention heads from a copy of ``model`` (no fine-tuning: the pipeline adds
    that) and check that the smaller model still runs on ``example_inputs`` with the same output shapes."""
    inputs = _as_tuple(example_inputs)
    plan = plan_structured(model, config, example_inputs=inputs, data=data)
    pruned = apply_plan(model, plan, example_inputs=inputs)
    _check_runs(model, pruned, plan, inputs)
    before, after = _widths(model), _widths(pruned)
    removed = {name: (before[name] - after[name], after[name]) for name in before}
    return StructuredResult(pruned, plan, removed, _params(model), _params(pruned), count_macs(model, inputs),
                            count_macs(pruned, inputs))
