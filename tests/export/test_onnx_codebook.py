"""Codebook storage of clustered weights (L3): packed indices + table, rebuilt in the graph and folded by ONNX
Runtime at load. Smaller files, bit-identical outputs, the same kernels."""

import math
from collections import Counter

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import helper, numpy_helper

from edgecompress.clustering import ClusterConfig, cluster
from edgecompress.export import get_exporter, onnx_compact
from edgecompress.export.onnx_codebook import store_codebook_weights
from edgecompress.quantization import QuantConfig, quantize
from edgecompress.testing.onnx_runtime import optimized_session
from edgecompress.testing.tiny_models import TinyWide1d


def _export(tmp_path, name, model, x, scheme, monkeypatch=None):
    if monkeypatch is not None:  # the same export without the codebook rewrite
        monkeypatch.setattr(onnx_compact, "store_codebook_weights", lambda graph: [])
    return get_exporter("onnx").export(model, (x[:1],), tmp_path / name, scheme=scheme).path



@pytest.mark.parametrize(("clusters", "scheme", "min_ratio"), [
    (16, "fp32", 6.0),  # measured 6.84× (148579 → 21725 B)
    (4, "fp32", 10.0),  # measured 11.96× (148579 → 12427 B)
    pytest.param(16, "fp16", 3.0, marks=pytest.mark.slow),  # measured 3.49× (75245 → 21587 B)
])
def test_clustered_weights_shrink_the_file_and_run_bit_identically(tmp_path, monkeypatch, clusters, scheme,
                                                                   min_ratio):
    torch.manual_seed(0)
    x = torch.randn(64, 16, 8)
    model = cluster(TinyWide1d().eval(), ClusterConfig(clusters=clusters))
    small = _export(tmp_path, "codebook.onnx", model, x, scheme)
    with monkeypatch.context() as m:
        dense = _export(tmp_path, "dense.onnx", model, x, scheme, monkeypatch=m)
    ratio = dense.stat().st_size / small.stat().st_size
    # 4-bit / 2-bit indices for 4-byte / 2-byte weights (8× / 16× / 4× on the weights); biases, tables and the
    # graph are the rest
    print(f"{clusters} clusters {scheme}: {dense.stat().st_size} → {small.stat().st_size} B, {ratio:.2f}x")
    assert ratio > min_ratio
    proto = onnx.load(str(small))
    codes = {i.name: i for i in proto.graph.initializer if i.name.endswith("_codes")}
    assert len(codes) == 3  # conv, fc1, fc2 (1280 weights) all rewritten
    (s_small, ops_small), (s_dense, ops_dense) = optimized_session(small, tmp_path), optimized_session(dense, tmp_path)
    assert ops_small == ops_dense  # folded at load: the optimized graphs run the same kernels
    np.testing.assert_array_equal(s_small.run(None, {"input": x.numpy()})[0],
                                  s_dense.run(None, {"input": x.numpy()})[0])


@pytest.mark.slow
def test_per_channel_codebooks_use_a_table_per_row(tmp_path, monkeypatch):
    torch.manual_seed(0)
    x = torch.randn(16, 16, 8)
    model = cluster(TinyWide1d().eval(), ClusterConfig(clusters=16, per_channel=True))
    small = _export(tmp_path, "codebook.onnx", model, x, "fp32")
    with monkeypatch.context() as m:
        dense = _export(tmp_path, "dense.onnx", model, x, "fp32", monkeypatch=m)
    proto = onnx.load(str(small))
    assert Counter(n.op_type for n in proto.graph.node)["GatherElements"] >= 2
    ratio = dense.stat().st_size / small.stat().st_size
    print(f"per-channel 16 clusters: {dense.stat().st_size} → {small.stat().st_size} B, {ratio:.2f}x")
    # measured 4.54× (the conv's 32 × 16 table and fc1's 128 × 16 one cost more than one table per layer)
    assert ratio > 3.0
    (s_small, ops_small), (s_dense, ops_dense) = optimized_session(small, tmp_path), optimized_session(dense, tmp_path)
    assert ops_small == ops_dense
    np.testing.assert_array_equal(s_small.run(None, {"input": x.numpy()})[0],
                                  s_dense.run(None, {"input": x.numpy()})[0])


def _graph(values: np.ndarray):
    """The weight read by MatMul and also a graph output, so the run returns the rebuilt weight itself."""
    elem = helper.np_dtype_to_tensor_dtype(values.dtype)
    rows, cols = values.shape
    return helper.make_graph(
        [helper.make_node("MatMul", ["input", "w"], ["output"])], "g",
        [helper.make_tensor_value_info("input", elem, [1, rows])],
        [helper.make_tensor_value_info("output", elem, [1, cols]),
         helper.make_tensor_value_info("w", elem, [rows, cols])],
        [numpy_helper.from_array(values, "w")])


def _rebuilt(graph):
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    onnx.checker.check_model(proto, full_check=True)
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    rows = graph.input[0].type.tensor_type.shape.dim[1].dim_value
    dtype = helper.tensor_dtype_to_np_dtype(graph.input[0].type.tensor_type.elem_type)
    return session.run(["w"], {"input": np.ones((1, rows), dtype)})[0]


@pytest.mark.parametrize(("distinct", "width"), [(2, 1), (3, 2), (4, 2), (5, 4), (16, 4), (17, 8), (256, 8)])
@pytest.mark.parametrize(("dtype", "shape"), [(np.float32, (37, 41)), (np.float16, (64, 30))])
def test_the_rebuild_is_exact_and_packed_to_the_narrowest_width(distinct, width, dtype, shape):
    rng = np.random.default_rng(distinct)
    table = ((np.arange(distinct) + 1) * (-1) ** np.arange(distinct) * 0.0137).astype(dtype)  # distinct, nonzero
    if distinct >= 4:  # (with fewer values, mostly zeros are bitmask + nonzeros' business)
        table[:2] = [-0.0, 0.0]  # kept apart: tables hold bit patterns
    values = table[np.arange(math.prod(shape)) % distinct][rng.permutation(math.prod(shape))].reshape(shape)
    graph = _graph(values)
    assert store_codebook_weights(graph) == ["w"]
    codes = next(i for i in graph.initializer if i.name == "w_codes")
    assert numpy_helper.to_array(codes).size == math.ceil(values.size * width / 8)
    out = _rebuilt(graph)
    assert out.dtype == values.dtype
    np.testing.assert_array_equal(out.view(np.uint8), values.view(np.uint8))  # bit for bit, signs of zero too


def test_rows_with_their_own_values_get_a_table_per_row():
    rng = np.random.default_rng(0)
    tables = rng.standard_normal((64, 4)).astype(np.float32)  # 256 distinct overall, 4 per row
    values = np.take_along_axis(tables, rng.integers(0, 4, (64, 100)), axis=1)
    graph = _graph(values)
    assert store_codebook_weights(graph) == ["w"]
    assert "GatherElements" in {n.op_type for n in graph.node}
    assert numpy_helper.to_array(next(i for i in graph.initializer if i.name == "w_codes")).size == 64 * 100 // 4
    np.testing.assert_array_equal(_rebuilt(graph), values)


@pytest.mark.parametrize("case", ["many_values", "small", "other_reader", "sparse_is_smaller"])
def test_weights_it_cannot_shrink_are_left_alone(case):
    rng = np.random.default_rng(0)
    values = rng.standard_normal((64, 64)).astype(np.float32)  # 4096 distinct values
    if case == "small":
        values = np.repeat(np.float32([1.0, 2.0]), 500).reshape(20, 50)
    if case == "sparse_is_smaller":  # 97 % zeros: bitmask + nonzeros beat 8-bit indices
        values = np.where(rng.random((64, 64)) < 0.97, 0.0, np.round(values * 40) / 40).astype(np.float32)
        assert len(np.unique(values)) <= 256
    graph = _graph(values)
    if case == "other_reader":
        values = np.repeat(np.float32([1.0, 2.0]), 2048).reshape(64, 64)
        graph = helper.make_graph([helper.make_node("Add", ["w", "input"], ["output"])], "g",
                                  [helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, [64, 64])],
                                  [helper.make_tensor_value_info("output", onnx.TensorProto.FLOAT, [64, 64])],
                                  [numpy_helper.from_array(values, "w")])
    assert store_codebook_weights(graph) == []


def test_int8_quantized_weights_are_not_touched(tmp_path, monkeypatch):
    torch.manual_seed(0)
    x = torch.randn(64, 16, 8)
    model = cluster(TinyWide1d().eval(), ClusterConfig(clusters=16))
    qmodel = quantize(model, QuantConfig(reduce_range=True), calibration=x)
    path = _export(tmp_path, "int8.onnx", qmodel, x, "int8")
    proto = onnx.load(str(path))
    assert not [i.name for i in proto.graph.initializer if i.name.endswith(("_codes", "_table"))]
    assert any(i.name.endswith("weight_int") for i in proto.graph.initializer)
