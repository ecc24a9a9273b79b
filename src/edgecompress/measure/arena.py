"""Peak activation RAM of an artifact on a microcontroller (X5): a liveness-based tensor arena plan at batch 1.

Each run-time tensor lives from the op that writes it (graph inputs: from the first op) to the last op that
reads it (graph outputs: to the last op), as TFLite Micro's allocation planner counts them. Offsets are then
placed as TFLite Micro's GreedyMemoryPlanner does (tensorflow/lite/micro/memory_planner/
greedy_memory_planner.cc): buffers in descending size (ties: the later-added first), each at the lowest offset
where it overlaps no buffer alive at the same time; sizes rounded up to the arena alignment (16 bytes in TFLM).

What is not in the plan: kernel scratch buffers (e.g. CMSIS-NN's im2col, a few KB at most for small convs),
the interpreter's own tensor and node structs, and in-place sharing (TFLM copies even for RESHAPE).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import DataError
from .artifact_graph import ArtifactGraph, read_graph

TFLM_ALIGNMENT = 16  # MicroArenaBufferAlignment()


@dataclass(frozen=True)
class Buffer:
    tensor: str  # key in ArtifactGraph.tensors
    nbytes: int
    first: int  # index of the first op during which the tensor must exist
    last: int  # index of the last one
    offset: int


@dataclass(frozen=True)
class OpMemory:
    index: int
    op_type: str
    layer: str | None
    label: str
    live_bytes: int  # bytes of every tensor alive while this op runs (its inputs and outputs included)


@dataclass(frozen=True)
class ArenaPlan:
    """A tensor arena plan. ``arena_bytes``: the planned arena (what to allocate); ``peak_live_bytes``: the most
    bytes alive at one op, a lower bound for any plan; ``peak_op``: that op."""

    format: str
    alignment: int
    buffers: tuple[Buffer, ...]
    ops: tuple[OpMemory, ...]
    arena_bytes: int
    peak_live_bytes: int
    peak_op: OpMemory | None

    def to_dict(self, *, per_op: bool = True) -> dict:
        result = {"arena_bytes": self.arena_bytes, "peak_live_bytes": self.peak_live_bytes,
                  "peak_op": self.peak_op.label if self.peak_op else None, "alignment": self.alignment,
                  "format": self.format}
        if per_op:
            result["ops"] = [{"index": o.index, "op": o.op_type, "layer": o.layer, "live_bytes": o.live_bytes}
                             for o in self.ops]
        return result


def lifetimes(graph: ArtifactGraph, *, keep_inputs: bool = False) -> dict[str, tuple[int, int]]:
    """(first op, last op) of each run-time tensor some op or the graph's interface touches. ``keep_inputs``:
    the graph's inputs stay alive to the last op (LiteRT's ArenaPlanner keeps them; TFLite Micro does not)."""
    last_op = max(len(graph.ops) - 1, 0)
    first: dict[str, int] = {name: 0 for name in graph.inputs}
    last: dict[str, int] = {name: last_op if keep_inputs else 0 for name in graph.inputs}
    for op in graph.ops:
        for name in op.outputs:
            first.setdefault(name, op.index)
            last[name] = max(last.get(name, op.index), op.index)
        for name in op.inputs:
            first.setdefault(name, op.index)  # read before any op writes it: alive from there
            last[name] = max(last.get(name, op.index), op.index)
    for name in graph.outputs:
        first.setdefault(name, last_op)
        last[name] = last_op
    return {name: (first[name], last[name]) for name in first}


def _align(n: int, alignment: int) -> int:
    return -(-n // alignment) * alignment


def greedy_offsets(sizes: Sequence[int], spans: Sequence[tuple[int, int]]) -> list[int]:
    """TFLite Micro's greedy placement: the offset of each buffer, given its size and (first, last) op."""
    if len(sizes) != len(spans):
        raise DataError(f"greedy_offsets needs one (first, last) span per size, got {len(sizes)} sizes and "
                        f"{len(spans)} spans")
    # TFLM fills its sort array from the tail, then bubble-sorts it stably by descending size.
    order = sorted(reversed(range(len(sizes))), key=lambda i: -sizes[i])
    offsets = [0] * len(sizes)
    placed: list[int] = []  # buffer ids by ascending offset
    for b in order:
        first, last = spans[b]
        candidate = 0
        for p in placed:
            p_first, p_last = spans[p]
            if p_first > last or first > p_last:
                continue  # not alive at the same time
            if offsets[p] - candidate >= sizes[b]:
                break  # the gap before this buffer holds it
            candidate = max(candidate, offsets[p] + sizes[p])
        offsets[b] = candidate
        position = next((k for k, p in enumerate(placed) if offsets[p] > candidate), len(placed))
        placed.insert(position, b)
    return offsets


def plan_arena(graph: ArtifactGraph | str | os.PathLike[str], *, alignment: int = TFLM_ALIGNMENT,
               keep_inputs: bool = False) -> ArenaPlan:
    """The arena plan of an artifact (``.onnx`` / ``.tflite`` path) or of an ArtifactGraph, at batch 1 in the
    artifact's own activation types (int8 for a QDQ or int8 TFLite model, float32 for a float one). The
    defaults are TFLite Micro's conventions; ``alignment=64, keep_inputs=True`` are LiteRT's."""
    if isinstance(alignment, bool) or not isinstance(alignment, int) or alignment < 1:
        raise DataError(f"alignment must be an integer ≥ 1, got {alignment!r}")
    if not isinstance(graph, ArtifactGraph):
        graph = read_graph(graph)
    spans = lifetimes(graph, keep_inputs=keep_inputs)
    names = list(spans)
    sizes = [_align(graph.tensors[n].nbytes, alignment) for n in names]
    offsets = greedy_offsets(sizes, [spans[n] for n in names])
    buffers = tuple(Buffer(n, graph.tensors[n].nbytes, *spans[n], offset) for n, offset in zip(names, offsets,
                                                                                              strict=True))
    ops = tuple(OpMemory(op.index, op.op_type, op.layer, op.label,
                         sum(b.nbytes for b in buffers if b.first <= op.index <= b.last)) for op in graph.ops)
    peak = max(ops, key=lambda o: o.live_bytes, default=None)
    arena = max((o + s for o, s in zip(offsets, sizes, strict=True)), default=0)
    peak_live = peak.live_bytes if peak else sum(b.nbytes for b in buffers)
    return ArenaPlan(graph.format, alignment, buffers, ops, arena, peak_live, peak)
