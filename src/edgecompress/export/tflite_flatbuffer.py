"""Reading and editing a .tflite flatbuffer: the int8 interface of an int8 model, metadata, and the constant
tensors (what the size and integrity checks read)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_NUMPY_TYPES = {0: np.float32, 1: np.float16, 2: np.int32, 3: np.uint8, 4: np.int64, 7: np.int16, 9: np.int8,
                10: np.float64}
TYPE_NAMES = {0: "float32", 1: "float16", 2: "int32", 3: "uint8", 4: "int64", 7: "int16", 9: "int8", 10: "float64"}
_INT8 = 9
_QUANTIZE, _DEQUANTIZE = 114, 6  # BuiltinOperator codes


@dataclass(frozen=True)
class Constant:
    """A constant tensor of the model with its quantization parameters (empty when it is float)."""

    name: str
    dtype: str
    data: np.ndarray
    scales: np.ndarray
    zero_points: np.ndarray
    axis: int


def read(content: bytes):
    from ai_edge_litert.tools import flatbuffer_utils

    return flatbuffer_utils.read_model_from_bytearray(bytearray(content))


def write(model) -> bytes:
    from ai_edge_litert.tools import flatbuffer_utils

    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def _tensor_name(tensor) -> str:
    name = tensor.name
    return name.decode() if isinstance(name, bytes) else (name or "")


def constants(model) -> list[Constant]:
    out = []
    for tensor in model.subgraphs[0].tensors:
        buffer = model.buffers[tensor.buffer] if tensor.buffer < len(model.buffers) else None
        if buffer is None or buffer.data is None or len(buffer.data) == 0 or tensor.type not in _NUMPY_TYPES:
            continue
        data = np.frombuffer(bytes(buffer.data), dtype=_NUMPY_TYPES[tensor.type]).reshape(list(tensor.shape))
        q = tensor.quantization
        scales = np.asarray(q.scale if q is not None and q.scale is not None else [], dtype=np.float32)
        zero_points = np.asarray(q.zeroPoint if q is not None and q.zeroPoint is not None else [], dtype=np.int64)
        out.append(Constant(_tensor_name(tensor), TYPE_NAMES[tensor.type], data, scales, zero_points,
                            int(q.quantizedDimension) if q is not None else 0))
    return out


def constant_bytes(model) -> dict[str, int]:
    """Bytes of constant data by element type, e.g. {"int8": 1024, "int32": 64}."""
    totals: dict[str, int] = {}
    for c in constants(model):
        totals[c.dtype] = totals.get(c.dtype, 0) + c.data.nbytes
    return totals


def _builtin(model, op) -> int:
    code = model.operatorCodes[op.opcodeIndex]
    return max(code.builtinCode, code.deprecatedBuiltinCode)


def integer_interface(model) -> list[str]:
    """Make the boundary int8: drop each QUANTIZE that reads a float input into int8 and each DEQUANTIZE that
    turns an int8 tensor into a float output, so that callers exchange the int8 tensors (with their scales
    and zero points) directly, as TFLite's ``inference_input_type=int8`` does. Returns the names of the float
    boundary tensors that stay float (nothing quantized behind them)."""
    subgraph = model.subgraphs[0]
    tensors, operators = subgraph.tensors, list(subgraph.operators)
    consumers: dict[int, list] = {}
    for op in operators:
        for index in op.inputs:
            consumers.setdefault(index, []).append(op)
    producers = {index: op for op in operators for index in op.outputs}
    replaced: dict[int, int] = {}
    dropped = []
    for position, index in enumerate(subgraph.inputs):
        users = consumers.get(index, [])
        if len(users) == 1 and _builtin(model, users[0]) == _QUANTIZE and tensors[users[0].outputs[0]].type == _INT8:
            dropped.append(users[0])
            subgraph.inputs[position] = replaced[index] = users[0].outputs[0]
    for position, index in enumerate(subgraph.outputs):
        op = producers.get(index)
        if op is not None and _builtin(model, op) == _DEQUANTIZE and tensors[op.inputs[0]].type == _INT8:
            dropped.append(op)
            subgraph.outputs[position] = replaced[index] = op.inputs[0]
    subgraph.operators = [op for op in operators if not any(op is d for d in dropped)]
    for old, new in replaced.items():  # the int8 tensor takes the boundary's name
        tensors[new].name, tensors[old].name = _tensor_name(tensors[old]), f"{_tensor_name(tensors[old])}_float"
    for signature in model.signatureDefs or []:
        if signature.subgraphIndex == 0:
            for entry in list(signature.inputs or []) + list(signature.outputs or []):
                entry.tensorIndex = replaced.get(entry.tensorIndex, entry.tensorIndex)
    return [_tensor_name(tensors[i]) for i in list(subgraph.inputs) + list(subgraph.outputs)
            if tensors[i].type != _INT8]


def set_metadata(model, name: str, data: bytes) -> None:
    from ai_edge_litert import schema_py_generated as schema

    buffer = schema.BufferT()
    buffer.data = np.frombuffer(data, dtype=np.uint8).copy()
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name, entry.buffer = name, len(model.buffers) - 1
    model.metadata = [m for m in (model.metadata or []) if _tensor_name(m) != name] + [entry]


def get_metadata(model, name: str) -> bytes | None:
    for entry in model.metadata or []:
        if _tensor_name(entry) == name:
            return bytes(model.buffers[entry.buffer].data)
    return None
