"""An exported artifact's graph as an integer runtime executes it at batch 1: run-time tensors with their byte
sizes, the ops in execution order, and the constant data stored in the file. The arena plan (arena.py) and
the energy estimate (energy.py) read this, not the file.

What a deployed runtime does to the file's graph is done here too:
- ONNX: ops whose inputs are all constant are folded (weight DequantizeLinear, scale products); a
  QuantizeLinear after an op and the DequantizeLinear after it are fused into that op, whose output is then
  stored in the quantized type (int8 activations in a QDQ model, as ONNX Runtime's QLinear kernels and a
  TFLite int8 model store them); Relu / Clip are fused into the op before them, as TFLite and ONNX Runtime do.
  Quantize / Dequantize at the model's float boundary stay. The batch dimension is set to 1.
- TFLite: the graph as written (litert-torch already fuses activations); shapes are static, batch 1.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from ..errors import ExportError, MissingDependencyError, UnsupportedError


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]
    dtype: str  # numpy-style name: int8, uint8, int32, float16, float32, int4, …
    nbytes: int


@dataclass(frozen=True)
class OpInfo:
    """One op as executed. ``inputs`` / ``outputs`` are run-time tensors (keys of ArtifactGraph.tensors);
    ``weights`` the stored constants it reads (weights, biases; quantization parameters are not listed)."""

    index: int
    op_type: str  # ONNX op type or TFLite builtin name
    layer: str | None  # the model's layer, read from its weight's name, when it has one
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    weights: tuple[str, ...]
    macs: int  # multiply-accumulates at batch 1 (convolutions, fully-connected, matmul; 0 for other ops)
    compute_dtype: str  # element type of the first run-time input: what the op computes in

    @property
    def label(self) -> str:
        return f"{self.op_type} {self.layer}" if self.layer else f"{self.op_type} #{self.index}"


@dataclass(frozen=True)
class ArtifactGraph:
    format: str  # "onnx" or "tflite"
    tensors: Mapping[str, TensorInfo]  # run-time tensors (activations, inputs, outputs)
    constants: Mapping[str, TensorInfo]  # constant data stored in the file
    ops: tuple[OpInfo, ...]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]

    @property
    def constant_bytes(self) -> int:
        """Bytes of every constant tensor stored in the artifact: what the weights need in flash."""
        return sum(c.nbytes for c in self.constants.values())

    @property
    def macs(self) -> int:
        return sum(op.macs for op in self.ops)

    def activation_dtypes(self) -> tuple[str, ...]:
        return tuple(sorted({t.dtype for t in self.tensors.values()}))

    def weight_dtypes(self) -> tuple[str, ...]:
        """Element types of the stored weights: constants read by ops that multiply (weights, biases) and
        constants of two or more dimensions (e.g. float16 weights a DEQUANTIZE reads); shape and axis
        constants aside."""
        return tuple(sorted({self.constants[w].dtype for op in self.ops for w in op.weights
                             if op.macs or len(self.constants[w].shape) >= 2}))

    def op_types(self) -> tuple[str, ...]:
        return tuple(sorted({op.op_type for op in self.ops}))


def _nbytes(shape: tuple[int, ...], bits: int) -> int:
    return math.ceil(math.prod(shape) * bits / 8)


# --- ONNX -----------------------------------------------------------------------------------------------

# Ops into which a following Relu / Clip is fused (TFLite's fused activation; ONNX Runtime's FusedConv / QLinear*).
_FUSES_ACTIVATION = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul", "Add", "Sub", "Mul", "AveragePool",
                               "MaxPool", "Concat"})
_ACTIVATIONS = frozenset({"Relu", "Clip"})
_CONTROL_FLOW = frozenset({"If", "Loop", "Scan"})


def _onnx_types():
    import onnx

    tp = onnx.TensorProto
    table = {tp.FLOAT: ("float32", 32), tp.FLOAT16: ("float16", 16), tp.BFLOAT16: ("bfloat16", 16),
             tp.DOUBLE: ("float64", 64), tp.INT8: ("int8", 8), tp.UINT8: ("uint8", 8), tp.INT16: ("int16", 16),
             tp.UINT16: ("uint16", 16), tp.INT32: ("int32", 32), tp.UINT32: ("uint32", 32),
             tp.INT64: ("int64", 64), tp.UINT64: ("uint64", 64), tp.BOOL: ("bool", 8), tp.INT4: ("int4", 4),
             tp.UINT4: ("uint4", 4)}
    for name, bits in (("INT2", 2), ("UINT2", 2), ("FLOAT8E4M3FN", 8), ("FLOAT8E5M2", 8)):
        if hasattr(tp, name):
            table[getattr(tp, name)] = (name.lower() if bits == 2 else "float8", bits)
    return table


def _static_batch_one(model):
    """A copy whose inputs have batch 1 (a symbolic first dimension); other symbolic dimensions are refused."""
    import onnx

    model = onnx.ModelProto.FromString(model.SerializeToString())
    initializers = {i.name for i in model.graph.initializer}
    for value in model.graph.input:
        if value.name in initializers:
            continue
        for axis, dim in enumerate(value.type.tensor_type.shape.dim):
            if dim.HasField("dim_value") and dim.dim_value > 0:
                continue
            if axis != 0:
                raise UnsupportedError(f"input {value.name!r} has a symbolic dimension {axis} "
                                       f"({dim.dim_param or '?'}); the memory plan needs static shapes except the "
                                       "batch (dimension 0), which is set to 1")
            dim.Clear()
            dim.dim_value = 1
    del model.graph.value_info[:]
    for out in model.graph.output:  # outputs are re-inferred from batch 1
        out.type.tensor_type.ClearField("shape")
    return model


def _onnx_value_types(model) -> dict[str, tuple[int, tuple[int, ...]]]:
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True, data_prop=True)
    except Exception as e:  # onnx raises InferenceError and others
        raise UnsupportedError(f"ONNX shape inference failed, so tensor sizes are unknown: {e}") from None
    types = {}
    for value in (*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output):
        tensor_type = value.type.tensor_type
        if not tensor_type.HasField("shape"):
            continue
        dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in tensor_type.shape.dim)
        types[value.name] = (tensor_type.elem_type, dims)
    return types


def _layer_from_constant(name: str) -> str | None:
    """``conv1.weight_int`` → ``conv1``; names without a module path (``val_10``) give None."""
    return name.rsplit(".", 1)[0] if "." in name else None


def _onnx_macs(op_type: str, out_shape, in_shapes) -> int:
    if op_type == "Conv" and len(in_shapes) > 1:
        return math.prod(out_shape) * math.prod(in_shapes[1][1:])
    if op_type == "ConvTranspose" and len(in_shapes) > 1:
        return math.prod(in_shapes[0]) * math.prod(in_shapes[1][1:])
    if op_type in ("MatMul", "MatMulInteger") and in_shapes[0]:
        return math.prod(out_shape) * in_shapes[0][-1]
    if op_type == "Gemm" and len(in_shapes) > 1 and out_shape:
        return math.prod(out_shape) * (math.prod(in_shapes[1]) // max(out_shape[-1], 1))
    return 0


def _constant_node(node, info) -> TensorInfo:
    import onnx

    attr = node.attribute[0] if len(node.attribute) == 1 else None
    name = node.output[0]
    if attr is not None and attr.name == "value":
        return info(name, attr.t.data_type, tuple(attr.t.dims))
    if attr is not None and attr.name == "sparse_value":
        return info(name, attr.sparse_tensor.values.data_type, tuple(attr.sparse_tensor.dims))
    scalar = {"value_float": (onnx.TensorProto.FLOAT, ()), "value_int": (onnx.TensorProto.INT64, ()),
              "value_floats": (onnx.TensorProto.FLOAT, (len(attr.floats),) if attr else ()),
              "value_ints": (onnx.TensorProto.INT64, (len(attr.ints),) if attr else ())}
    if attr is None or attr.name not in scalar:
        raise UnsupportedError(f"Constant node {name!r} holds {attr.name if attr else 'no value'}; the memory plan "
                               f"sizes value, sparse_value, {', '.join(scalar)}")
    elem_type, shape = scalar[attr.name]
    return info(name, elem_type, shape)


def onnx_graph(model) -> ArtifactGraph:
    """The executed graph of an ``onnx.ModelProto`` (see the module docstring for what is folded and fused)."""
    import onnx

    types_table = _onnx_types()
    model = _static_batch_one(model)
    value_types = _onnx_value_types(model)
    graph = model.graph

    def info(name: str, elem_type: int, shape) -> TensorInfo:
        if elem_type not in types_table:
            given = onnx.helper.tensor_dtype_to_string(elem_type)
            raise UnsupportedError(f"tensor {name!r} has ONNX element type {given}, which the memory plan does not "
                                   f"size; supported: {', '.join(sorted(n for n, _ in types_table.values()))}")
        if any(d < 0 for d in shape):
            raise UnsupportedError(f"tensor {name!r} has an unknown shape {list(shape)} after shape inference at "
                                   "batch 1; the memory plan needs static shapes")
        dtype, bits = types_table[elem_type]
        return TensorInfo(name, tuple(int(d) for d in shape), dtype, _nbytes(tuple(shape), bits))

    constants: dict[str, TensorInfo] = {i.name: info(i.name, i.data_type, tuple(i.dims)) for i in graph.initializer}
    for node in graph.node:
        if node.op_type in _CONTROL_FLOW:
            raise UnsupportedError(f"the memory plan covers one flat graph; {node.op_type} (control flow with "
                                   "subgraphs) is not supported")
        if node.op_type == "Constant":
            constants[node.output[0]] = _constant_node(node, info)

    # Fold ops whose inputs are all constant; remember the stored constant each derived one comes from
    # (through input 0 only: a DequantizeLinear's scale is a quantization parameter, not a weight).
    source: dict[str, str] = {name: name for name in constants}
    executed = []
    for node in graph.node:
        if node.op_type == "Constant":
            continue
        inputs = [i for i in node.input if i]
        if inputs and all(i in source for i in inputs):
            for out in node.output:
                source[out] = source[inputs[0]]
        else:
            executed.append(node)

    producer = {out: node for node in executed for out in node.output}
    consumers: dict[str, list] = {}
    for node in executed:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    graph_inputs = [v.name for v in graph.input if v.name not in constants]
    graph_outputs = [v.name for v in graph.output]
    outputs_set = set(graph_outputs)

    alias: dict[str, str] = {}
    stored_type: dict[str, int] = {}

    def canon(name: str) -> str:
        while name in alias:
            name = alias[name]
        return name

    fused = set()
    for node in executed:
        x = node.input[0] if node.input else ""
        if not x or x in source:
            continue
        out = node.output[0]
        sole_user = consumers.get(x) == [node] and x not in outputs_set
        made_by = producer.get(x)
        if node.op_type == "QuantizeLinear" and sole_user and made_by is not None:
            alias[out] = x
            stored_type[canon(x)] = value_types[out][0]
            fused.add(id(node))
        elif node.op_type == "DequantizeLinear" and out not in outputs_set and made_by is not None \
                and made_by.op_type == "QuantizeLinear":
            alias[out] = x
            fused.add(id(node))
        elif node.op_type in _ACTIVATIONS and sole_user and made_by is not None \
                and made_by.op_type in _FUSES_ACTIVATION and id(made_by) not in fused:
            alias[out] = x
            fused.add(id(node))

    tensors: dict[str, TensorInfo] = {}

    def runtime_tensor(name: str) -> str:
        key = canon(name)
        if key not in tensors:
            if key not in value_types:
                raise UnsupportedError(f"tensor {key!r} has no shape after shape inference at batch 1")
            elem_type, shape = value_types[key]
            tensors[key] = info(key, stored_type.get(key, elem_type), shape)
        return key

    for name in graph_inputs:
        runtime_tensor(name)
    ops = []
    for node in executed:
        if id(node) in fused:
            continue
        names = [i for i in node.input if i]
        run_inputs = tuple(dict.fromkeys(runtime_tensor(i) for i in names if i not in source))
        weights = tuple(dict.fromkeys(source[i] for i in names if i in source
                                      and node.op_type not in ("QuantizeLinear", "DequantizeLinear")))
        outputs = tuple(runtime_tensor(o) for o in node.output if o)
        shapes = [value_types[i][1] if i in value_types else constants[source[i]].shape for i in names]
        out_shape = tensors[outputs[0]].shape if outputs else ()
        macs = _onnx_macs(node.op_type, out_shape, shapes)
        layer = next((_layer_from_constant(w) for w in weights if _layer_from_constant(w)), None)
        compute = tensors[run_inputs[0]].dtype if run_inputs else ""
        ops.append(OpInfo(len(ops), node.op_type, layer, run_inputs, outputs, weights, macs, compute))
    for name in graph_outputs:
        runtime_tensor(name)
    return ArtifactGraph("onnx", MappingProxyType(tensors), MappingProxyType(constants), tuple(ops),
                         tuple(canon(n) for n in graph_inputs), tuple(canon(n) for n in graph_outputs))


# --- TFLite ---------------------------------------------------------------------------------------------

_TFLITE_TYPES = {"FLOAT32": ("float32", 32), "FLOAT16": ("float16", 16), "INT32": ("int32", 32),
                 "UINT8": ("uint8", 8), "INT64": ("int64", 64), "BOOL": ("bool", 8), "INT16": ("int16", 16),
                 "INT8": ("int8", 8), "FLOAT64": ("float64", 64), "UINT32": ("uint32", 32),
                 "UINT16": ("uint16", 16), "INT4": ("int4", 4), "UINT64": ("uint64", 64), "BFLOAT16": ("bfloat16", 16)}
# A converter tensor name "pkg.module.Class_layer;..." → the layer name after the class.
_TFLITE_LAYER = re.compile(r"^(?:[a-z_][a-z0-9_]*\.)*_?[A-Z][A-Za-z0-9]*_(.+)$")


def _tflite_layer(name: str) -> str | None:
    segments = [s for s in name.split(";") if s and not s.isdigit()]
    if not segments:
        return None
    match = _TFLITE_LAYER.match(segments[-1].rsplit("/", 1)[-1])
    return match.group(1) if match else None


def _tflite_macs(op_type: str, out_shape, shapes) -> int:
    if op_type == "CONV_2D" and len(shapes) > 1:  # filter [O, H, W, I]
        return math.prod(out_shape) * math.prod(shapes[1][1:])
    if op_type == "DEPTHWISE_CONV_2D" and len(shapes) > 1:  # filter [1, H, W, O]
        return math.prod(out_shape) * shapes[1][1] * shapes[1][2]
    if op_type == "CONV_3D" and len(shapes) > 1:  # filter [D, H, W, I, O]
        return math.prod(out_shape) * math.prod(shapes[1][:-1])
    if op_type == "FULLY_CONNECTED" and len(shapes) > 1:  # weights [O, I]
        return math.prod(out_shape) * shapes[1][-1]
    if op_type == "BATCH_MATMUL" and shapes[0]:
        return math.prod(out_shape) * shapes[0][-1]
    if op_type == "TRANSPOSE_CONV" and len(shapes) > 2:  # (output shape, filter [O, H, W, I], input)
        return math.prod(shapes[2]) * math.prod(shapes[1][:-1])
    return 0


def tflite_graph(content: bytes) -> ArtifactGraph:
    """The graph of a .tflite flatbuffer's first subgraph, tensors keyed by their index (as a string)."""
    try:
        from ai_edge_litert import schema_py_generated as schema
        from ai_edge_litert.tools import flatbuffer_utils
    except ImportError:
        raise MissingDependencyError("reading a .tflite file needs ai-edge-litert: pip install edgecompress[tflite]"
                                     ) from None
    try:
        model = flatbuffer_utils.read_model_from_bytearray(bytearray(content))
    except Exception as e:  # flatbuffers raises several types for a damaged file
        raise ExportError(f"cannot parse the TFLite flatbuffer: {type(e).__name__}: {e}") from None
    if len(model.subgraphs) != 1:
        raise UnsupportedError(f"the memory plan covers one subgraph; this model has {len(model.subgraphs)}")
    type_names = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    op_names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    subgraph = model.subgraphs[0]

    def info(index: int) -> TensorInfo:
        t = subgraph.tensors[index]
        name = t.name.decode() if isinstance(t.name, bytes) else (t.name or "")
        type_name = type_names.get(t.type, str(t.type))
        if type_name not in _TFLITE_TYPES:
            raise UnsupportedError(f"tensor {name!r} has TFLite type {type_name}, which the memory plan does not "
                                   f"size; supported: {', '.join(sorted(_TFLITE_TYPES))}")
        shape = tuple(int(d) for d in (t.shape if t.shape is not None else ()))
        dtype, bits = _TFLITE_TYPES[type_name]
        return TensorInfo(name, shape, dtype, _nbytes(shape, bits))

    def is_constant(index: int) -> bool:
        t = subgraph.tensors[index]
        buffer = model.buffers[t.buffer] if 0 < t.buffer < len(model.buffers) else None
        # Models over 2 GB keep buffers outside the flatbuffer, at an offset (> 1 means set).
        return buffer is not None and ((buffer.data is not None and len(buffer.data) > 0)
                                       or (getattr(buffer, "offset", 0) or 0) > 1)

    tensors: dict[str, TensorInfo] = {}
    constants: dict[str, TensorInfo] = {}
    for index in range(len(subgraph.tensors)):
        (constants if is_constant(index) else tensors)[str(index)] = info(index)
    every = {**tensors, **constants}
    dequantized: dict[str, str] = {}  # output of a DEQUANTIZE of a constant (float16 weights) → that constant
    ops = []
    for op in subgraph.operators:
        code = model.operatorCodes[op.opcodeIndex]
        builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
        op_type = op_names.get(builtin, str(builtin))
        if op_type == "CUSTOM":
            custom = code.customCode.decode() if isinstance(code.customCode, bytes) else code.customCode
            op_type = f"CUSTOM:{custom}"
        names = [str(i) for i in op.inputs if i >= 0]
        run_inputs = tuple(n for n in names if n in tensors)
        weights = tuple(n for n in names if n in constants)
        outputs = tuple(str(i) for i in op.outputs if i >= 0)
        shapes = [every[n].shape for n in names]
        out_shape = tensors[outputs[0]].shape if outputs else ()
        if op_type == "DEQUANTIZE" and weights and not run_inputs:
            dequantized.update({o: weights[0] for o in outputs})
        named = [*weights, *(dequantized[n] for n in run_inputs if n in dequantized)]
        layer = next((_tflite_layer(constants[w].name) for w in named
                      if len(constants[w].shape) >= 2 and _tflite_layer(constants[w].name)), None)
        compute = tensors[run_inputs[0]].dtype if run_inputs else ""
        ops.append(OpInfo(len(ops), op_type, layer, run_inputs, outputs, weights,
                          _tflite_macs(op_type, out_shape, shapes), compute))
    return ArtifactGraph("tflite", MappingProxyType(tensors), MappingProxyType(constants), tuple(ops),
                         tuple(str(i) for i in subgraph.inputs), tuple(str(i) for i in subgraph.outputs))


def read_graph(path: str | os.PathLike[str]) -> ArtifactGraph:
    """The executed graph of an ``.onnx`` or ``.tflite`` artifact."""
    path = Path(path)
    if not path.is_file():
        raise ExportError(f"artifact not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        import onnx

        try:
            model = onnx.load(str(path), load_external_data=False)
        except Exception as e:  # protobuf raises several types for a damaged file
            raise ExportError(f"cannot parse ONNX file {path}: {type(e).__name__}: {e}") from None
        return onnx_graph(model)
    if suffix == ".tflite":
        return tflite_graph(path.read_bytes())
    raise UnsupportedError(f"the memory and energy estimates read .onnx and .tflite artifacts, got {path.name!r}")
