"""Codebook storage of clustered (weight-shared) weights in ONNX (L3): a float32 / float16 weight with at most 256
distinct values is stored as one small index per weight, packed 8, 4, 2 or 1 bits each (the narrowest that
numbers the distinct values), plus its table of values, and rebuilt in the graph:

    index = BitwiseAnd(BitShift(packed, [0, b, 2b, …]), 2^b − 1)    (8-bit indices are stored as they are)
    dense = Reshape(Gather(table, index), shape)                     one table for the whole weight, or
    dense = Reshape(GatherElements(table, index as [rows, n]), shape)   one table per row (dim 0), when the
                                                                      weight was clustered per output channel

Every input is a constant, so ONNX Runtime folds the subgraph at load into the dense initializer it replaces:
kernels, results and latency are those of the dense file. Tables hold the exact bit patterns of the values, so
the rebuilt weight is bit-identical. Quantized (integer) weights, read by DequantizeLinear, are left alone.
Rewritten only where the file gets smaller, and not where bitmask + nonzeros (onnx_sparse, which runs after
this pass) stores the weight in fewer payload bytes."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .onnx_graph import prepend_nodes, weight_initializers

_TYPES = {onnx.TensorProto.FLOAT: np.uint32, onnx.TensorProto.FLOAT16: np.uint16}  # → the view of its bits
_WEIGHT_READERS = {"Conv": 1, "Gemm": 1, "MatMul": 1}
_MIN_ELEMENTS = 1024  # below this the added nodes cost about what the packing saves
_MAX_CODES = 256  # 8-bit indices at most
_WIDTHS = (1, 2, 4, 8)


@dataclass
class _Layout:
    """How one weight is stored: codes (flat, one per weight) into ``table`` ((K,) or (rows, K))."""

    codes: np.ndarray
    table: np.ndarray
    width: int

    @property
    def payload(self) -> int:
        return math.ceil(self.codes.size * self.width / 8) + self.table.nbytes


def store_codebook_weights(graph: onnx.GraphProto) -> list[str]:
    """Rewrite every float weight that has few enough distinct values as packed indices + codebook; returns the
    names rewritten."""
    present = {i.name for i in graph.initializer}
    rewritten, new_nodes = [], []
    for init in weight_initializers(graph, _TYPES, _WEIGHT_READERS, _MIN_ELEMENTS):
        values = numpy_helper.to_array(init)
        layout = _cheapest_layout(values, _TYPES[init.data_type])
        if layout is None or layout.payload >= _sparse_payload(values):
            continue
        nodes, tensors, shared = _rebuild(init.name, values.shape, layout)
        shared = [t for t in shared if t.name not in present]
        added = sum(t.ByteSize() for t in tensors + shared) + sum(n.ByteSize() for n in nodes)
        if added >= init.ByteSize():
            continue
        graph.initializer.remove(init)
        graph.initializer.extend(tensors + shared)
        present.update(t.name for t in shared)
        new_nodes += nodes
        rewritten.append(init.name)
    prepend_nodes(graph, new_nodes)
    return rewritten




def _width(distinct: int) -> int:
    return next(w for w in _WIDTHS if distinct <= 2 ** w)


def _cheapest_layout(values: np.ndarray, bits_type: type) -> _Layout | None:
    """One table for the weight, or one per row of dim 0, whichever stores fewer bytes; None when neither fits
    in 8-bit indices. Values are compared by bit pattern, so -0.0 and 0.0 stay apart and the rebuild is exact."""
    bits = values.reshape(-1).view(bits_type)
    candidates = []
    table, codes = np.unique(bits, return_inverse=True)
    if table.size <= _MAX_CODES:
        candidates.append(_Layout(codes.reshape(-1), table.view(values.dtype), _width(table.size)))
    if values.ndim >= 2 and values.shape[0] > 1:
        rows = [np.unique(row, return_inverse=True) for row in bits.reshape(values.shape[0], -1)]
        k = max(t.size for t, _ in rows)
        if k <= _MAX_CODES:
            tables = np.stack([np.pad(t, (0, k - t.size), mode="edge") for t, _ in rows])
            codes = np.concatenate([c.reshape(-1) for _, c in rows])
            candidates.append(_Layout(codes, tables.view(values.dtype), _width(k)))
    return min(candidates, key=lambda c: c.payload, default=None)


def _sparse_payload(values: np.ndarray) -> int:
    """What onnx_sparse would store: a bitmask of the nonzeros plus their values and a leading zero."""
    return math.ceil(values.size / 8) + (int(np.count_nonzero(values)) + 1) * values.itemsize


def _pack(codes: np.ndarray, width: int) -> np.ndarray:
    """Codes of ``width`` bits, 8 // width per byte, the first in the lowest bits; (bytes, 1) for the unpack's
    broadcast against the shifts (8-bit codes: flat uint8)."""
    codes = codes.astype(np.uint8)
    if width == 8:
        return codes
    per = 8 // width
    padded = np.zeros(math.ceil(codes.size / per) * per, np.uint8)
    padded[:codes.size] = codes
    grouped = padded.reshape(-1, per)
    packed = np.zeros(grouped.shape[0], np.uint8)
    for j in range(per):
        packed |= grouped[:, j] << np.uint8(width * j)
    return packed.reshape(-1, 1)


def _rebuild(name: str, shape: tuple[int, ...], layout: _Layout
             ) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto], list[onnx.TensorProto]]:
    """The nodes that rebuild the weight under its own name, its constants, and the constants shared by every
    rewritten weight (added once)."""
    p, width, count = f"{name}_codebook", layout.width, layout.codes.size
    tensors = [numpy_helper.from_array(_pack(layout.codes, width), f"{name}_codes"),
               numpy_helper.from_array(np.ascontiguousarray(layout.table), f"{name}_table"),
               numpy_helper.from_array(np.array(shape, np.int64), f"{name}_shape")]
    shared, nodes, codes = [], [], f"{name}_codes"
    if width < 8:
        shifts, mask = f"codebook_shifts{width}", f"codebook_mask{width}"
        shared += [numpy_helper.from_array(np.arange(0, 8, width, dtype=np.uint8), shifts),
                   numpy_helper.from_array(np.array(2 ** width - 1, np.uint8), mask),
                   numpy_helper.from_array(np.array([-1], np.int64), "codebook_flat")]
        nodes += [helper.make_node("BitShift", [codes, shifts], [f"{p}_shifted"], direction="RIGHT"),
                  helper.make_node("BitwiseAnd", [f"{p}_shifted", mask], [f"{p}_grouped"]),
                  helper.make_node("Reshape", [f"{p}_grouped", "codebook_flat"], [f"{p}_padded"])]
        codes = f"{p}_padded"
        if count % (8 // width):  # drop the padding codes of the last byte
            tensors.append(numpy_helper.from_array(np.array([count], np.int64), f"{name}_count"))
            shared.append(numpy_helper.from_array(np.array([0], np.int64), "codebook_start"))
            nodes.append(helper.make_node("Slice", [codes, "codebook_start", f"{name}_count"], [f"{p}_sliced"]))
            codes = f"{p}_sliced"
    nodes.append(helper.make_node("Cast", [codes], [f"{p}_index"], to=onnx.TensorProto.INT32))
    if layout.table.ndim == 1:
        nodes.append(helper.make_node("Gather", [f"{name}_table", f"{p}_index"], [f"{p}_flat"]))
    else:
        tensors.append(numpy_helper.from_array(np.array([shape[0], -1], np.int64), f"{name}_rows"))
        nodes += [helper.make_node("Reshape", [f"{p}_index", f"{name}_rows"], [f"{p}_row_index"]),
                  helper.make_node("GatherElements", [f"{name}_table", f"{p}_row_index"], [f"{p}_flat"], axis=1)]
    nodes.append(helper.make_node("Reshape", [f"{p}_flat", f"{name}_shape"], [name]))
    return nodes, tensors, shared
