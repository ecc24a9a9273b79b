"""Sparse storage of pruned weights (P7): bitmask + nonzero values, rebuilt in the graph and folded by ONNX
Runtime at load. Smaller files, bit-identical outputs, integer kernels intact."""


import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import helper, numpy_helper

from edgecompress.export import get_exporter, onnx_compact
from edgecompress.export.onnx_sparse import store_sparse_weights
from edgecompress.pruning import PruneConfig, prune
from edgecompress.quantization import QuantConfig, quantize
from edgecompress.testing.onnx_runtime import optimized_session
from edgecompress.testing.tiny_models import TinyWide1d


def _export(tmp_path, name, model, x, scheme, monkeypatch=None):
    if monkeypatch is not None:  # the same export without the sparse rewrite
        monkeypatch.setattr(onnx_compact, "store_sparse_weights", lambda graph: [])
    return get_exporter("onnx").export(model, (x[:1],), tmp_path / name, scheme=scheme).path



@pytest.mark.parametrize("scheme", ["fp32", "int8"])
def test_pruned_weights_shrink_the_file_and_run_bit_identically(tmp_path, monkeypatch, scheme):
    torch.manual_seed(0)
    x = torch.randn(64, 16, 8)
    model = prune(TinyWide1d().eval(), PruneConfig(sparsity=0.9))
    if scheme == "int8":
        model = quantize(model, QuantConfig(reduce_range=True), calibration=x)
    sparse = _export(tmp_path, "sparse.onnx", model, x, scheme)
    with monkeypatch.context() as m:
        dense = _export(tmp_path, "dense.onnx", model, x, scheme, monkeypatch=m)
    ratio = dense.stat().st_size / sparse.stat().st_size
    # measured 6.5× (fp32) and 2.6× (int8: scales, biases and the graph are a larger share of the small file)
    assert ratio > (5.0 if scheme == "fp32" else 2.0)
    (s_sparse, ops_sparse), (s_dense, ops_dense) = (optimized_session(p, tmp_path) for p in (sparse, dense))
    assert ops_sparse == ops_dense  # folded at load: the optimized graphs run the same kernels
    np.testing.assert_array_equal(s_sparse.run(None, {"input": x.numpy()})[0],
                                  s_dense.run(None, {"input": x.numpy()})[0])


def test_dense_weights_are_left_as_they_are(tmp_path):
    torch.manual_seed(0)
    x = torch.randn(4, 16, 8)
    path = _export(tmp_path, "dense.onnx", TinyWide1d().eval(), x, "fp32")
    assert not any(i.name.endswith("_nonzero_bits") for i in onnx.load(str(path)).graph.initializer)


@pytest.mark.parametrize(("dtype", "shape"), [(np.int8, (37, 41)), (np.float16, (64, 30)), (np.float32, (33, 50))])
def test_the_rebuild_is_exact_for_any_shape_and_type(dtype, shape):
    """The weight read by DequantizeLinear (int8, scale 1) or by MatMul with an identity input (floats): the
    graph's output is the rebuilt weight itself."""
    rng = np.random.default_rng(0)
    values = (rng.standard_normal(shape) * 50).astype(dtype)
    values[rng.random(shape) < 0.85] = 0
    inits = [numpy_helper.from_array(values, "w")]
    if dtype == np.int8:
        inits.append(numpy_helper.from_array(np.array(1.0, np.float32), "one"))
        nodes, inputs, feed = [helper.make_node("DequantizeLinear", ["w", "one"], ["output"])], [], {}
        expected, out_type = values.astype(np.float32), onnx.TensorProto.FLOAT
    else:
        out_type = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
        nodes = [helper.make_node("MatMul", ["input", "w"], ["output"])]
        inputs = [helper.make_tensor_value_info("input", out_type, [shape[0], shape[0]])]
        feed, expected = {"input": np.eye(shape[0], dtype=dtype)}, values
    graph = helper.make_graph(nodes, "g", inputs, [helper.make_tensor_value_info("output", out_type, list(shape))],
                              inits)
    assert store_sparse_weights(graph) == ["w"]
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    onnx.checker.check_model(proto, full_check=True)
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_array_equal(session.run(None, feed)[0], expected)


def test_a_weight_read_by_another_op_is_not_rewritten():
    values = np.zeros((64, 64), np.float32)
    graph = helper.make_graph([helper.make_node("Add", ["w", "input"], ["output"])], "g",
                              [helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, [64, 64])],
                              [helper.make_tensor_value_info("output", onnx.TensorProto.FLOAT, [64, 64])],
                              [numpy_helper.from_array(values, "w")])
    assert store_sparse_weights(graph) == []
