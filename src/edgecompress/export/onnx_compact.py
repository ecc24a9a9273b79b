"""Exact size reductions of an exported ONNX graph.

On small edge models the graph's bookkeeping is a visible share of the file: per-node names and default
attributes, long generated value names, a float32 bias scale per output channel that merely repeats
input_scale × weight_scale, and per-channel constants stored wider than their values need (float16-valued
scales in float32, int16-sized biases in int32). Pruned weights are stored as bitmask + nonzero values
(onnx_sparse). Every rewrite here leaves the computed values bit-identical and keeps the Q/DQ patterns ONNX
Runtime fuses into QLinearConv / QGemm (checked in the tests).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .onnx_codebook import store_codebook_weights
from .onnx_graph import drop_unused_initializers, prepend_nodes, replace_initializer
from .onnx_lowbit import pack_low_bit
from .onnx_sparse import store_sparse_weights

# ONNX opset-21 defaults of the attributes the exporter writes out explicitly.
_DEFAULT_ATTRIBUTES = {
    "QuantizeLinear": {"axis": 1, "block_size": 0, "saturate": 1, "output_dtype": 0},
    "DequantizeLinear": {"axis": 1, "block_size": 0},
}


def compact(proto: onnx.ModelProto) -> onnx.ModelProto:
    graph = proto.graph
    pack_low_bit(proto)
    _drop_default_attributes(graph)
    _bias_scale_from_product(graph)
    _drop_zero_int32_zero_points(graph)
    drop_unused_initializers(graph)
    _narrow_constants(graph)
    store_codebook_weights(graph)
    store_sparse_weights(graph)
    _short_value_names(graph)
    for node in graph.node:
        node.name = ""  # optional in ONNX; runtimes name nodes themselves
    return proto


def _drop_default_attributes(graph: onnx.GraphProto) -> None:
    for node in graph.node:
        defaults = _DEFAULT_ATTRIBUTES.get(node.op_type)
        if not defaults:
            continue
        keep = [a for a in node.attribute
                if not (a.name in defaults and helper.get_attribute_value(a) == defaults[a.name])]
        del node.attribute[:]
        node.attribute.extend(keep)


def _bias_scale_from_product(graph: onnx.GraphProto) -> None:
    """An int32 bias's scale is input_scale × weight_scale by construction; compute it in the graph (ONNX
    Runtime folds the Mul at load, before its Q/DQ fusion) instead of storing a float per channel. Only
    rewritten where the stored scale equals the float32 product bit for bit."""
    initializers = {i.name: i for i in graph.initializer}
    producers = {out: node for node in graph.node for out in node.output}
    products: dict[tuple[str, str], str] = {}
    new_nodes = []
    for node in graph.node:
        if node.op_type not in ("Conv", "Gemm") or len(node.input) < 3 or not node.input[2]:
            continue
        x_dq, w_dq, b_dq = (producers.get(name) for name in node.input[:3])
        if not all(dq is not None and dq.op_type == "DequantizeLinear" for dq in (x_dq, w_dq, b_dq)):
            continue
        names = (x_dq.input[1], w_dq.input[1], b_dq.input[1])
        if not all(name in initializers for name in names) or b_dq.input[0] not in initializers:
            continue
        x_scale, w_scale, b_scale = (numpy_helper.to_array(initializers[name]) for name in names)
        if initializers[b_dq.input[0]].data_type != onnx.TensorProto.INT32 or x_scale.size != 1:
            continue
        product = (x_scale.astype(np.float32) * w_scale.astype(np.float32)).astype(np.float32)
        if product.shape != b_scale.shape or not np.array_equal(product, b_scale):
            continue
        key = names[:2]
        if key not in products:
            products[key] = f"{names[1]}_times_input_scale"
            new_nodes.append(helper.make_node("Mul", list(key), [products[key]]))
        b_dq.input[1] = products[key]
    prepend_nodes(graph, new_nodes)


def _drop_zero_int32_zero_points(graph: onnx.GraphProto) -> None:
    """DequantizeLinear's zero point is optional and defaults to 0 of the input's type; for int32 biases
    it is always 0. (8-bit zero points stay: they carry the type, and ONNX Runtime's fusion expects them.)"""
    initializers = {i.name: i for i in graph.initializer}
    for node in graph.node:
        if node.op_type != "DequantizeLinear" or len(node.input) < 3:
            continue
        zp = initializers.get(node.input[2])
        if zp is None or zp.data_type != onnx.TensorProto.INT32:
            continue
        if not np.any(numpy_helper.to_array(zp)):
            del node.input[2]




# Narrower storage tried for a DequantizeLinear's constant inputs, narrowest first, by the type the graph uses.
_NARROWER = {
    onnx.TensorProto.FLOAT: ((np.float16, "f16"),),
    onnx.TensorProto.INT32: ((np.int8, "i8"), (np.int16, "i16")),
}


def _narrow_constants(graph: onnx.GraphProto) -> None:
    """Store a DequantizeLinear's constant vector (weight scales, int32 biases) in the narrowest type that holds
    every value exactly and cast it back in the graph; ONNX Runtime folds the Cast at load, before its Q/DQ
    fusion, so kernels see the same float32 / int32 values. quantization.lowbit rounds weight scales to
    float16 numbers for this. Rewritten only where the Cast node costs fewer bytes than it saves."""
    initializers = {i.name: i for i in graph.initializer}
    new_nodes = []
    for name in dict.fromkeys(n for node in graph.node if node.op_type == "DequantizeLinear" for n in node.input[:2]):
        init = initializers.get(name)
        if init is None or init.data_type not in _NARROWER or len(init.dims) == 0:
            continue
        values = numpy_helper.to_array(init)
        for dtype, suffix in _NARROWER[init.data_type]:
            narrow = values.astype(dtype)
            if not np.array_equal(narrow.astype(values.dtype), values):
                continue
            tensor = numpy_helper.from_array(narrow, f"{name}_{suffix}")
            cast = helper.make_node("Cast", [tensor.name], [name], to=init.data_type)
            if tensor.ByteSize() + cast.ByteSize() < init.ByteSize():
                replace_initializer(graph, name, tensor)
                new_nodes.append(cast)
            break
    prepend_nodes(graph, new_nodes)


def _short_value_names(graph: onnx.GraphProto) -> None:
    """Rename the exporter's generated intermediate values (``val_123``, ``dequantize_17``…) to short ids.
    Weight names (which name the layer) and the graph's inputs and outputs are kept."""
    if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for n in graph.node for a in n.attribute):
        return  # subgraphs may refer to outer values by name; leave such graphs as they are
    keep = {i.name for i in graph.initializer} | {v.name for v in graph.input} | {v.name for v in graph.output}
    renamed: dict[str, str] = {}

    def short(name: str) -> str:
        if not name or name in keep:
            return name
        return renamed.setdefault(name, f"t{len(renamed):x}")

    for node in graph.node:
        for i, name in enumerate(node.input):
            node.input[i] = short(name)
        for i, name in enumerate(node.output):
            node.output[i] = short(name)
