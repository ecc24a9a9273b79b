"""The ONNX compaction pass: smaller files, bit-identical outputs, Q/DQ fusion intact."""

from collections import Counter

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import helper, numpy_helper

from edgecompress.export import get_exporter
from edgecompress.export import onnx as onnx_export
from edgecompress.export.onnx_compact import compact
from edgecompress.quantization import QuantConfig, quantize
from edgecompress.testing.tiny_models import TinyConv1d, TinyMLP, TinyResidual2d


def _export(tmp_path, cls, name, monkeypatch=None):
    torch.manual_seed(0)
    model = cls().eval()
    x = torch.cat([model.example_inputs(batch_size=16)[0] for _ in range(4)])
    qmodel = quantize(model, QuantConfig(reduce_range=True), calibration=x)
    if monkeypatch is not None:
        monkeypatch.setattr(onnx_export, "compact", lambda proto: proto)
    return get_exporter("onnx").export(qmodel, model.example_inputs(), tmp_path / name, scheme="int8").path


def _fused_ops(path, tmp_path):
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / f"{path.stem}.opt.onnx")
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session, Counter(n.op_type for n in onnx.load(options.optimized_model_filepath).graph.node)


@pytest.mark.parametrize("cls", [TinyConv1d, TinyResidual2d, TinyMLP])
def test_compaction_is_exact_smaller_and_keeps_integer_kernels(tmp_path, monkeypatch, cls):
    small = _export(tmp_path, cls, "small.onnx")
    with monkeypatch.context() as m:
        plain = _export(tmp_path, cls, "plain.onnx", monkeypatch=m)
    assert small.stat().st_size < plain.stat().st_size
    s_small, ops_small = _fused_ops(small, tmp_path)
    s_plain, ops_plain = _fused_ops(plain, tmp_path)
    integer_ops = {"QLinearConv", "QGemm", "QLinearMatMul", "MatMulInteger", "ConvInteger"}
    assert sum(ops_small[o] for o in integer_ops) == sum(ops_plain[o] for o in integer_ops) > 0
    x = torch.cat([cls().example_inputs(batch_size=8)[0] for _ in range(2)]).numpy()
    np.testing.assert_array_equal(s_small.run(None, {"input": x})[0], s_plain.run(None, {"input": x})[0])
    proto = onnx.load(str(small))
    assert not [i.name for i in proto.graph.initializer if i.name.endswith("bias_scale")]
    assert not [i.name for i in proto.graph.initializer if i.name.endswith("bias_zero_point")]
    assert any(i.name.endswith("weight_int") for i in proto.graph.initializer)  # layer names kept


def _bias_graph(bias_scale):
    x_scale, w_scale = np.float32(0.1), np.array([0.5, 0.25], np.float32)
    inits = [
        numpy_helper.from_array(np.array(x_scale), "xs"), numpy_helper.from_array(np.array(0, np.uint8), "xz"),
        numpy_helper.from_array(np.ones((2, 1, 1), np.int8), "w"), numpy_helper.from_array(w_scale, "ws"),
        numpy_helper.from_array(np.zeros(2, np.int8), "wz"), numpy_helper.from_array(np.array([3, 4], np.int32), "b"),
        numpy_helper.from_array(bias_scale, "bs"), numpy_helper.from_array(np.zeros(2, np.int32), "bz"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["input", "xs", "xz"], ["q"], axis=1, saturate=1),
        helper.make_node("DequantizeLinear", ["q", "xs", "xz"], ["xd"]),
        helper.make_node("DequantizeLinear", ["w", "ws", "wz"], ["wd"], axis=0),
        helper.make_node("DequantizeLinear", ["b", "bs", "bz"], ["bd"], axis=0),
        helper.make_node("Conv", ["xd", "wd", "bd"], ["output"], name="conv"),
    ]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, [1, 1, 4])],
                              [helper.make_tensor_value_info("output", onnx.TensorProto.FLOAT, [1, 2, 4])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])


def test_bias_scale_is_replaced_only_when_it_equals_the_product_bit_for_bit():
    exact = compact(_bias_graph(np.float32(0.1) * np.array([0.5, 0.25], np.float32)))
    onnx.checker.check_model(exact, full_check=True)
    assert "bs" not in {i.name for i in exact.graph.initializer}
    assert [n.op_type for n in exact.graph.node][0] == "Mul"
    assert all(n.name == "" for n in exact.graph.node)
    q = next(n for n in exact.graph.node if n.op_type == "QuantizeLinear")
    assert not q.attribute  # axis=1 and saturate=1 are the defaults

    off = np.float32(0.1) * np.array([0.5, 0.25], np.float32)
    off[1] = np.nextafter(off[1], np.float32(1))
    kept = compact(_bias_graph(off))
    assert "bs" in {i.name for i in kept.graph.initializer}
    assert "Mul" not in {n.op_type for n in kept.graph.node}


def _wide_graph(bias: np.ndarray, w_scale: np.ndarray) -> onnx.ModelProto:
    channels = bias.size
    inits = [
        numpy_helper.from_array(np.array(0.1, np.float32), "xs"), numpy_helper.from_array(np.array(0, np.uint8), "xz"),
        numpy_helper.from_array(np.ones((channels, 1, 1), np.int8), "w"), numpy_helper.from_array(w_scale, "ws"),
        numpy_helper.from_array(np.zeros(channels, np.int8), "wz"), numpy_helper.from_array(bias, "b"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["input", "xs", "xz"], ["q"]),
        helper.make_node("DequantizeLinear", ["q", "xs", "xz"], ["xd"]),
        helper.make_node("DequantizeLinear", ["w", "ws", "wz"], ["wd"], axis=0),
        helper.make_node("Mul", ["xs", "ws"], ["bs"]),
        helper.make_node("DequantizeLinear", ["b", "bs"], ["bd"], axis=0),
        helper.make_node("Conv", ["xd", "wd", "bd"], ["y"]),
        helper.make_node("QuantizeLinear", ["y", "xs", "xz"], ["yq"]),
        helper.make_node("DequantizeLinear", ["yq", "xs", "xz"], ["output"]),
    ]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, [1, 1, 4])],
                              [helper.make_tensor_value_info("output", onnx.TensorProto.FLOAT, [1, channels, 4])],
                              inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])


@pytest.mark.parametrize(("bias_max", "bias_type"), [(100, onnx.TensorProto.INT8), (30000, onnx.TensorProto.INT16),
                                                     (40000, onnx.TensorProto.INT32)])
def test_biases_and_scales_are_stored_narrower_only_when_exact(tmp_path, bias_max, bias_type):
    rng = np.random.default_rng(0)
    bias = rng.integers(-bias_max, bias_max + 1, size=64).astype(np.int32)
    bias[0] = bias_max
    for w_scale, half in ((rng.random(64).astype(np.float16).astype(np.float32), True),
                          (rng.random(64).astype(np.float32), False)):
        plain, small = _wide_graph(bias, w_scale), compact(_wide_graph(bias, w_scale))
        onnx.checker.check_model(small, full_check=True)
        stored = {i.name.split("_")[0]: i.data_type for i in small.graph.initializer}
        assert stored["b"] == bias_type
        assert stored["ws"] == (onnx.TensorProto.FLOAT16 if half else onnx.TensorProto.FLOAT)
        assert small.ByteSize() < plain.ByteSize() or (bias_type == onnx.TensorProto.INT32 and not half)
        paths = []
        for name, proto in (("plain", plain), ("small", small)):
            paths.append(tmp_path / f"{name}.onnx")
            onnx.save(proto, str(paths[-1]))
        (s_plain, _), (s_small, ops) = (_fused_ops(p, tmp_path) for p in paths)
        assert ops["QLinearConv"] == 1  # ONNX Runtime folds the Casts before fusing
        x = rng.standard_normal((1, 1, 4)).astype(np.float32)
        np.testing.assert_array_equal(s_small.run(None, {"input": x})[0], s_plain.run(None, {"input": x})[0])
