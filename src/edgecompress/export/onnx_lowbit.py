"""Packed storage of low-bit weights in ONNX: INT4 / INT2 initializers with blocked DequantizeLinear, binary
weights one bit each with an in-graph unpack, Linear weights laid out for ONNX Runtime's MatMulNBits. Every
rewrite keeps each weight's integer value and each scale's float32 value."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .onnx_graph import consumers, drop_unused_initializers, prepend_nodes, replace_initializer

# ONNX integer types by width; INT2/UINT2 need opset 25 (ONNX 1.20+, ONNX Runtime 1.23+), INT4/UINT4 opset 21.
_STORAGE = ((onnx.TensorProto.INT2, -2, 1), (onnx.TensorProto.UINT2, 0, 3), (onnx.TensorProto.INT4, -8, 7),
            (onnx.TensorProto.UINT4, 0, 15), (onnx.TensorProto.INT8, -128, 127), (onnx.TensorProto.UINT8, 0, 255))
_LOW_BIT = {onnx.TensorProto.INT2, onnx.TensorProto.UINT2, onnx.TensorProto.INT4, onnx.TensorProto.UINT4}
_TWO_BIT = {onnx.TensorProto.INT2, onnx.TensorProto.UINT2}
_TWO_BIT_OPSET = 25


def storage_type(qmin: int, qmax: int) -> int:
    """The narrowest ONNX integer type (TensorProto enum) holding every value of [qmin, qmax]."""
    for dtype, lo, hi in _STORAGE:
        if lo <= qmin and qmax <= hi:
            return dtype
    raise ValueError(f"no 8-bit or narrower ONNX integer type holds [{qmin}, {qmax}]")


def pack_low_bit(proto: onnx.ModelProto) -> None:
    """Store low-bit weights packed: fold Cast/Reshape chains on initializers into INT4/INT2 initializers (the
    exporter folds only small tensors) named after their layer, store Linear weights as [in, out] for
    MatMul, drop zero zero points, store binary {-1, +1} weights
    one bit each with an in-graph unpack, and raise the opset to 25 when INT2 remains. Exact: every weight
    keeps its integer value and every scale its float32 value."""
    graph = proto.graph
    _fold_low_bit_casts(graph)
    _name_low_bit_weights(graph)
    _matmul_layout(graph)
    _drop_zero_low_bit_zero_points(graph)
    _pack_binary(graph)
    _widen_two_bit_for_integer_conv(graph)
    drop_unused_initializers(graph)
    if any(i.data_type in _TWO_BIT for i in graph.initializer):
        for opset in proto.opset_import:
            if opset.domain in ("", "ai.onnx") and opset.version < _TWO_BIT_OPSET:
                opset.version = _TWO_BIT_OPSET
        proto.ir_version = max(proto.ir_version, helper.find_min_ir_version_for(list(proto.opset_import)))


def _widen_two_bit_for_integer_conv(graph: onnx.GraphProto) -> None:
    """ONNX Runtime 1.32 fuses DequantizeLinear(weight) → Conv into QLinearConv whenever the Conv's input is
    quantized too, and QLinearConv rejects INT2 weights (the model then fails to load). Such weights are
    stored in INT4 instead: the same values, twice the bytes."""
    producers = {out: node for node in graph.node for out in node.output}
    initializers = {i.name: i for i in graph.initializer}
    users = consumers(graph)
    for node in graph.node:
        if node.op_type != "DequantizeLinear" or node.input[0] not in initializers:
            continue
        weight = initializers[node.input[0]]
        if weight.data_type not in _TWO_BIT:
            continue
        convs = [u for u in users.get(node.output[0], []) if u.op_type == "Conv"]
        if not any(getattr(producers.get(c.input[0]), "op_type", None) == "DequantizeLinear" for c in convs):
            continue
        wide = onnx.TensorProto.INT4 if weight.data_type == onnx.TensorProto.INT2 else onnx.TensorProto.UINT4
        for name in node.input[0:3:2]:  # the weight and its zero point, if any
            if name in initializers and initializers[name].data_type in _TWO_BIT:
                values = numpy_helper.to_array(initializers[name]).astype(np.int8)
                replace_initializer(graph, name, helper.make_tensor(name, wide, values.shape,
                                                                     values.flatten().tolist()))






def _fold_low_bit_casts(graph: onnx.GraphProto) -> None:
    """Cast(initializer → INT4/INT2), possibly after Reshape(initializer, constant shape), becomes one typed
    initializer. It keeps the source initializer's name (the layer's) when nothing else reads the source."""
    while True:
        inits = {i.name: i for i in graph.initializer}
        users = consumers(graph)
        for node in graph.node:
            if node.op_type == "Cast" and node.input[0] in inits:
                to = helper.get_attribute_value(next(a for a in node.attribute if a.name == "to"))
                if to in _LOW_BIT:
                    values = numpy_helper.to_array(inits[node.input[0]]).astype(helper.tensor_dtype_to_np_dtype(to))
                    break
            if node.op_type == "Reshape" and all(n in inits for n in node.input[:2]):
                readers = users.get(node.output[0], [])
                if readers and all(r.op_type == "Cast" for r in readers):  # a weight on its way to a Cast
                    shape = numpy_helper.to_array(inits[node.input[1]])
                    values = numpy_helper.to_array(inits[node.input[0]]).reshape(shape)
                    break
        else:
            return
        source = node.input[0]
        name = source if len(users[source]) == 1 else node.output[0]
        for user in users.get(node.output[0], []):
            for j, inp in enumerate(user.input):
                if inp == node.output[0]:
                    user.input[j] = name
        replace_initializer(graph, name, numpy_helper.from_array(values, name))
        graph.node.remove(node)


def _low_bit_dequantizers(graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    """DequantizeLinear nodes whose integer input is an INT4/INT2 initializer."""
    low = {i.name for i in graph.initializer if i.data_type in _LOW_BIT}
    return [n for n in graph.node if n.op_type == "DequantizeLinear" and n.input[0] in low]


def _rename(graph: onnx.GraphProto, old: str, new: str) -> None:
    for init in graph.initializer:
        if init.name == old:
            init.name = new
    for node in graph.node:
        for j, name in enumerate(node.input):
            if name == old:
                node.input[j] = new


def _name_low_bit_weights(graph: onnx.GraphProto) -> None:
    """The exporter names the INT4/INT2 tensors it folds ``val_<n>``; name them after their layer again
    (``<layer>.weight_int`` / ``.weight_zero_point``, as the int8 path keeps them), from the scale's name."""
    taken = {i.name for i in graph.initializer}
    users = consumers(graph)
    for dq in _low_bit_dequantizers(graph):
        scale = dq.input[1]
        if not scale.endswith("weight_scale"):
            continue
        prefix = scale[: -len("weight_scale")]
        for name, suffix in zip(dq.input[0:3:2], ("weight_int", "weight_zero_point"), strict=False):
            target = prefix + suffix
            if name and name != target and target not in taken and len(users.get(name, [])) == 1:
                _rename(graph, name, target)
                taken.add(target)


def _drop_zero_low_bit_zero_points(graph: onnx.GraphProto) -> None:
    """Symmetric low-bit weights have zero points 0, DequantizeLinear's default for the weight's type; ONNX
    Runtime's MatMulNBits fusion does not need them (checked in the tests)."""
    inits = {i.name: i for i in graph.initializer}
    for dq in _low_bit_dequantizers(graph):
        if len(dq.input) > 2 and dq.input[2] in inits:
            if not np.any(numpy_helper.to_array(inits[dq.input[2]]).astype(np.int8)):
                del dq.input[2]


def _attr(node: onnx.NodeProto, name: str, default):
    found = [a for a in node.attribute if a.name == name]
    return helper.get_attribute_value(found[0]) if found else default


def _matmul_layout(graph: onnx.GraphProto) -> None:
    """Linear layers come out of the exporter as Gemm(x, DQ(W[out, in]), b, transB=1) or as
    MatMul(x, Transpose(DQ(W))). ONNX Runtime turns DequantizeLinear → MatMul into MatMulNBits (packed weights
    in memory, blocked kernels) only for a [in, out] weight blocked along axis 0, so store the blocked low-bit
    weight transposed (with its scales and zero points) and compute MatMul (+ Add for the bias): the same
    values, the same sums. The exporter's Gemm takes a 2-D input, which is what the Unsqueeze relies on."""
    inits = {i.name: i for i in graph.initializer}
    users = consumers(graph)
    producers = {out: node for node in graph.node for out in node.output}
    replaced: dict[int, list[onnx.NodeProto]] = {}
    for node in graph.node:
        if node.op_type == "Gemm":
            if (_attr(node, "transA", 0), _attr(node, "transB", 0), _attr(node, "alpha", 1.0),
                    _attr(node, "beta", 1.0)) != (0, 1, 1.0, 1.0):
                continue
            weight_value = node.input[1]
        elif node.op_type == "Transpose" and list(_attr(node, "perm", [])) == [1, 0]:
            weight_value = node.input[0]
            if not all(u.op_type == "MatMul" and u.input[1] == node.output[0] for u in users.get(node.output[0], [])):
                continue
        else:
            continue
        dq = producers.get(weight_value)
        if (dq is None or dq.op_type != "DequantizeLinear" or len(users.get(weight_value, [])) != 1
                or _attr(dq, "block_size", 0) <= 0 or _attr(dq, "axis", 1) != 1):
            continue
        tensors = [inits.get(name) for name in dq.input]
        if (any(t is None or len(users.get(t.name, [])) != 1 for t in tensors) or tensors[0].data_type not in _LOW_BIT
                or len(tensors[0].dims) != 2):
            continue
        if tensors[0].data_type in _TWO_BIT and tensors[0].dims[0] % 4 and not _is_binary(tensors[0]):
            # ONNX Runtime 1.32's MatMulNBits fusion misreads 2-bit weights whose rows do not start on a byte
            # (out_features not a multiple of 4): measured errors of ~20 on unit-scale outputs. Keep the
            # unfused layout, which DequantizeLinear reads correctly.
            continue
        for t in tensors:  # W, scale and zero point all [out, ·] → [·, out]
            replace_initializer(graph, t.name, numpy_helper.from_array(numpy_helper.to_array(t).T.copy(), t.name))
        keep = [a for a in dq.attribute if a.name != "axis"]
        dq.ClearField("attribute")
        dq.attribute.extend([helper.make_attribute("axis", 0), *keep])
        if node.op_type == "Transpose":
            for user in users[node.output[0]]:
                user.input[1] = weight_value
            replaced[id(node)] = []
            continue
        out = node.output[0]
        if len(node.input) < 3 or not node.input[2]:
            replaced[id(node)] = [helper.make_node("MatMul", [node.input[0], weight_value], [out])]
            continue
        # With a bias, compute on [1, batch, in]: ONNX Runtime fuses a 2-D MatMul + Add into Gemm first, then
        # Gemm + ReLU into FusedGemm, and the weights are dequantized on every run (measured 22x slower than
        # MatMulNBits on a 1024-wide MLP); a 3-D MatMul with a dynamic batch is left for MatMulNBits, which
        # also takes the bias. Unsqueeze / Squeeze only relabel the shape.
        if not any(i.name == "lowbit_axis0" for i in graph.initializer):
            graph.initializer.append(numpy_helper.from_array(np.array([0], np.int64), "lowbit_axis0"))
        replaced[id(node)] = [
            helper.make_node("Unsqueeze", [node.input[0], "lowbit_axis0"], [f"{out}_in3d"]),
            helper.make_node("MatMul", [f"{out}_in3d", weight_value], [f"{out}_mm3d"]),
            helper.make_node("Add", [f"{out}_mm3d", node.input[2]], [f"{out}_3d"]),
            helper.make_node("Squeeze", [f"{out}_3d", "lowbit_axis0"], [out])]
    if replaced:
        nodes = [n for node in graph.node for n in replaced.get(id(node), [node])]
        del graph.node[:]
        graph.node.extend(nodes)


def _is_binary(init: onnx.TensorProto) -> bool:
    codes = numpy_helper.to_array(init).astype(np.int8)
    return codes.size > 0 and bool(np.all(np.abs(codes) == 1))


def _pack_binary(graph: onnx.GraphProto) -> None:
    """An INT2 weight read only by DequantizeLinear (zero point 0) whose values are all ±1 is binary: store one
    bit per weight (uint8, little-endian bit order) and rebuild the int8 codes in the graph with
    BitShift → BitwiseAnd → Gather([-1, 1]); every input is constant, so ONNX Runtime folds it at load."""
    inits = {i.name: i for i in graph.initializer}
    users = consumers(graph)
    new_nodes: list[onnx.NodeProto] = []
    shared_added = False
    for init in list(graph.initializer):
        if init.data_type != onnx.TensorProto.INT2:
            continue
        readers = users.get(init.name, [])
        if not readers or any(r.op_type != "DequantizeLinear" or r.input[0] != init.name for r in readers):
            continue
        zero_points = [r.input[2] for r in readers if len(r.input) > 2 and r.input[2]]
        if any(z not in inits or np.any(numpy_helper.to_array(inits[z]).astype(np.int8)) for z in zero_points):
            continue
        if not _is_binary(init):
            continue
        codes = numpy_helper.to_array(init).astype(np.int8)
        if not shared_added:
            graph.initializer.extend([
                numpy_helper.from_array(np.arange(8, dtype=np.uint8), "binary_shifts"),
                numpy_helper.from_array(np.array(1, np.uint8), "binary_one"),
                numpy_helper.from_array(np.array([-1, 1], np.int8), "binary_levels"),
                numpy_helper.from_array(np.array([-1], np.int64), "binary_flat")])
            shared_added = True
        name = init.name
        packed = np.packbits(codes.reshape(-1) > 0, bitorder="little").reshape(-1, 1)
        bits_name, shape_name = f"{name}_bits", f"{name}_shape"
        graph.initializer.extend([numpy_helper.from_array(packed, bits_name),
                                  numpy_helper.from_array(np.array(codes.shape, np.int64), shape_name)])
        bits = f"{name}_and"  # [bytes, 8]: bit j of byte i is weight 8i + j
        new_nodes += [helper.make_node("BitShift", [bits_name, "binary_shifts"], [f"{name}_b"], direction="RIGHT"),
                      helper.make_node("BitwiseAnd", [f"{name}_b", "binary_one"], [bits])]
        if codes.size % 8:  # drop the padding bits of the last byte
            ends = f"{name}_count"
            graph.initializer.extend([numpy_helper.from_array(np.array([codes.size], np.int64), ends)])
            if not any(i.name == "binary_zero" for i in graph.initializer):
                graph.initializer.append(numpy_helper.from_array(np.array([0], np.int64), "binary_zero"))
            new_nodes += [helper.make_node("Reshape", [bits, "binary_flat"], [f"{name}_flat"]),
                          helper.make_node("Slice", [f"{name}_flat", "binary_zero", ends], [f"{name}_sliced"])]
            bits = f"{name}_sliced"
        new_nodes += [helper.make_node("Reshape", [bits, shape_name], [f"{name}_index_u8"]),
                      helper.make_node("Cast", [f"{name}_index_u8"], [f"{name}_index"], to=onnx.TensorProto.INT32),
                      helper.make_node("Gather", ["binary_levels", f"{name}_index"], [f"{name}_int8"])]
        for reader in readers:
            reader.input[0] = f"{name}_int8"
            if len(reader.input) > 2:
                reader.input[2] = ""  # zero point 0 of int8, the default
                while reader.input and not reader.input[-1]:
                    del reader.input[-1]
        graph.initializer.remove(init)
    prepend_nodes(graph, new_nodes)
