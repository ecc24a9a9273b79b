"""The microcontroller memory estimate (X5): a liveness-based tensor arena plan at batch 1, checked on hand-built
graphs whose answer is known exactly, on the int8 reference model, and against the LiteRT interpreter."""

import numpy as np
import pytest
import torch
from onnx import TensorProto, helper

from edgecompress.errors import DataError, UnsupportedError
from edgecompress.export.onnx import OnnxExporter
from edgecompress.measure import count_macs, plan_arena, read_graph
from edgecompress.measure.arena import greedy_offsets, lifetimes
from edgecompress.measure.artifact_graph import onnx_graph
from edgecompress.quantization import QuantConfig, quantize


def _weight(name, rows, cols):
    return helper.make_tensor(name, TensorProto.FLOAT, [rows, cols], np.zeros(rows * cols, np.float32))


def _model(nodes, initializers, inputs, outputs):
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in outputs],
                              initializer=initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])


def _gemm(x, layer, out, k, n):
    """x [1, k] → out [1, n], with the weight stored as ``{layer}.weight`` (transB: [n, k])."""
    return helper.make_node("Gemm", [x, f"{layer}.weight"], [out], transB=1), _weight(f"{layer}.weight", n, k)


def _graph(*gemms, extra=(), inputs=(("x", ["batch", 16]),), outputs=("y",)):
    nodes, weights = zip(*gemms, strict=True)
    return onnx_graph(_model([*nodes[:-1], *extra, nodes[-1]], list(weights), inputs, outputs))


def _no_overlap(plan):
    """Two buffers alive at the same op never share a byte of the arena."""
    for a in plan.buffers:
        for b in plan.buffers:
            if a is not b and a.first <= b.last and b.first <= a.last:
                assert a.offset + a.nbytes <= b.offset or b.offset + b.nbytes <= a.offset, (a, b)


def test_chain_frees_each_tensor_after_its_last_reader():
    # x [1,16] → fc1 → a [1,64] → fc2 → b [1,32] → fc3 → y [1,8]; float32: 64, 256, 128, 32 bytes
    graph = _graph(_gemm("x", "fc1", "a", 16, 64), _gemm("a", "fc2", "b", 64, 32), _gemm("b", "fc3", "y", 32, 8))
    assert lifetimes(graph) == {"x": (0, 0), "a": (0, 1), "b": (1, 2), "y": (2, 2)}
    plan = plan_arena(graph)
    assert [o.live_bytes for o in plan.ops] == [64 + 256, 256 + 128, 128 + 32]
    assert plan.peak_op.label == "Gemm fc2" and plan.peak_live_bytes == 384
    assert {b.tensor: b.offset for b in plan.buffers} == {"a": 0, "b": 256, "x": 256, "y": 0}
    assert plan.arena_bytes == 384  # the greedy plan reaches the lower bound here
    _no_overlap(plan)


def test_a_residual_branch_keeps_its_tensor_alive():
    # a is read again by the Add two ops later, so it lives through fc2: 256-byte a, b, c and 64-byte x, 32-byte y
    graph = _graph(_gemm("x", "fc1", "a", 16, 64), _gemm("a", "fc2", "b", 64, 64), _gemm("c", "fc3", "y", 64, 8),
                   extra=[helper.make_node("Add", ["a", "b"], ["c"])])
    assert lifetimes(graph)["a"] == (0, 2)
    plan = plan_arena(graph)
    assert [o.live_bytes for o in plan.ops] == [64 + 256, 256 + 256, 3 * 256, 256 + 32]
    assert plan.peak_op.label == "Add #2" and plan.arena_bytes == plan.peak_live_bytes == 768
    _no_overlap(plan)


def test_a_concat_holds_both_branches_and_its_output():
    # x feeds two branches (a [1,32], b [1,48]) joined by Concat into c [1,80]
    nodes = [_gemm("x", "left", "a", 16, 32), _gemm("x", "right", "b", 16, 48), _gemm("c", "head", "y", 80, 8)]
    graph = _graph(*nodes, extra=[helper.make_node("Concat", ["a", "b"], ["c"], axis=1)])
    assert lifetimes(graph) == {"x": (0, 1), "a": (0, 2), "b": (1, 2), "c": (2, 3), "y": (3, 3)}
    plan = plan_arena(graph)
    assert [o.live_bytes for o in plan.ops] == [64 + 128, 64 + 128 + 192, 128 + 192 + 320, 320 + 32]
    assert plan.peak_op.label == "Concat #2" and plan.arena_bytes == plan.peak_live_bytes == 640
    _no_overlap(plan)


def test_alignment_rounds_each_buffer_up():
    graph = _graph(_gemm("x", "fc1", "a", 16, 5), _gemm("a", "fc2", "y", 5, 3))  # 64, 20 and 12 bytes
    assert plan_arena(graph, alignment=1).arena_bytes == 64 + 20
    assert plan_arena(graph).arena_bytes == 64 + 32  # 16-byte alignment, as TFLite Micro
    assert plan_arena(graph, alignment=64).arena_bytes == 128
    with pytest.raises(DataError, match="alignment"):
        plan_arena(graph, alignment=0)


def test_greedy_offsets_first_fit_in_the_gaps():
    # the 100-byte buffer goes first at 0; the 40-byte one alive at the same time after it; the 30-byte one,
    # alive only with the 40-byte one, fits in the gap below it
    assert greedy_offsets([40, 100, 30], [(0, 1), (0, 0), (1, 2)]) == [100, 0, 0]
    with pytest.raises(DataError):
        greedy_offsets([1, 2], [(0, 0)])


def test_qdq_pairs_and_relu_fuse_into_int8_activations():
    # x → Q → DQ → Gemm(DQ(w int8)) → Relu → Q → DQ → y: an integer runtime keeps h in int8 and runs 3 ops
    w = helper.make_tensor("fc.weight_int", TensorProto.INT8, [8, 16], np.ones(128, np.int8))
    scale = helper.make_tensor("s", TensorProto.FLOAT, [], [0.1])
    zero = helper.make_tensor("z", TensorProto.INT8, [], [0])
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xd"]),
             helper.make_node("DequantizeLinear", ["fc.weight_int", "s", "z"], ["wd"]),
             helper.make_node("Gemm", ["xd", "wd"], ["h"], transB=1),
             helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("QuantizeLinear", ["r", "s", "z"], ["rq"]),
             helper.make_node("DequantizeLinear", ["rq", "s", "z"], ["y"])]
    graph = onnx_graph(_model(nodes, [w, scale, zero], [("x", ["batch", 16])], ["y"]))
    assert [op.op_type for op in graph.ops] == ["QuantizeLinear", "Gemm", "DequantizeLinear"]
    assert {n: (t.dtype, t.nbytes) for n, t in graph.tensors.items()} == {
        "x": ("float32", 64), "xq": ("int8", 16), "h": ("int8", 8), "y": ("float32", 32)}
    gemm = graph.ops[1]
    assert gemm.weights == ("fc.weight_int",) and gemm.layer == "fc" and gemm.compute_dtype == "int8"
    assert gemm.macs == 16 * 8
    assert graph.constant_bytes == 128 + 4 + 1


def test_unsupported_graphs_are_refused_with_the_reason():
    seq = _model([helper.make_node("Relu", ["x"], ["y"])], [], [("x", [1, "seq"])], ["y"])
    with pytest.raises(UnsupportedError, match="symbolic dimension 1"):
        onnx_graph(seq)
    with pytest.raises(UnsupportedError, match=r"\.onnx and \.tflite"):
        read_graph(__file__)


@pytest.fixture(scope="module")
def mnist1d(tmp_path_factory):
    from edgecompress.datasets import load_dataset
    from edgecompress.model_io import load_model

    loaded = load_model("builtin:mnist1d_cnn")
    calibration = load_dataset(loaded.dataset).x_train[:256]
    qmodel = quantize(loaded.model, QuantConfig(activation_dtype="int8"), calibration=calibration)
    out = tmp_path_factory.mktemp("mnist1d")
    int8 = OnnxExporter().export(qmodel, loaded.example_inputs, out / "int8.onnx", scheme="int8").path
    fp32 = OnnxExporter().export(loaded.model, loaded.example_inputs, out / "fp32.onnx", scheme="fp32").path
    return loaded, int8, fp32


def test_reference_model_int8_peak_is_at_conv2(mnist1d):
    loaded, int8, fp32 = mnist1d
    plan = plan_arena(int8)
    # conv1 writes 25 channels × 19 samples, conv2 reads them and writes 25 × 10: one byte each in int8
    assert plan.peak_op.label == "Conv conv2" and plan.peak_live_bytes == 25 * 19 + 25 * 10
    assert plan.arena_bytes == 736  # 725 rounded up buffer by buffer to 16 bytes: 480 + 256
    per_layer = {o.layer: o.live_bytes for o in plan.ops if o.layer}
    # conv1: the quantized input (40) and its output; the float input (160) is freed after QuantizeLinear
    assert per_layer == {"conv1": 40 + 475, "conv2": 725, "conv3": 250 + 125, "fc": 125 + 10}
    float_plan = plan_arena(fp32)  # the float artifact: the same tensors in float32
    assert float_plan.peak_op.label == "Conv conv2" and float_plan.peak_live_bytes == 4 * 725
    graph = read_graph(int8)
    assert graph.activation_dtypes() == ("float32", "int8")  # float only at the interface
    example = tuple(t[:1] for t in loaded.example_inputs)
    assert graph.macs == count_macs(loaded.model, example) == 31750


# --- the cross-check against LiteRT's own allocation ---------------------------------------------------------

@pytest.fixture(scope="module")
def residual_tflite(tmp_path_factory):
    pytest.importorskip("litert_torch")
    from edgecompress.testing.exports import int8_tflite
    from edgecompress.testing.tiny_models import TinyResidual2d

    torch.manual_seed(0)  # the model's initial weights
    return int8_tflite(TinyResidual2d(), tmp_path_factory.mktemp("litert") / "residual_int8.tflite")


def test_litert_places_every_tensor_as_the_plan_sizes_and_times_it(residual_tflite):
    from edgecompress.measure import litert_allocation

    graph = read_graph(residual_tflite)
    placed = litert_allocation(residual_tflite)
    assert {k: n for k, (_, n) in placed.placements.items()} == {k: t.nbytes for k, t in graph.tensors.items()}
    # Where LiteRT lets two tensors share bytes, our lifetimes must let them too: either they never live at the
    # same op, or one dies at the op that writes the other in place (its ADD writes over an input).
    spans = lifetimes(graph)
    for a, (oa, na) in placed.placements.items():
        for b, (ob, nb) in placed.placements.items():
            if a < b and oa < ob + nb and ob < oa + na:
                (fa, la), (fb, lb) = sorted([spans[a], spans[b]])
                assert la <= fb, (a, b, spans[a], spans[b])


def test_the_estimate_against_litert(residual_tflite):
    from edgecompress.measure import litert_allocation

    tflm = plan_arena(residual_tflite)  # TFLite Micro's conventions: the microcontroller estimate
    litert = litert_allocation(residual_tflite)
    # Measured: estimate 1,536 B, LiteRT 2,304 B (reference kernels). The 768 B difference is exactly the
    # float32 input (3×8×8×4), which LiteRT keeps for the whole run and TFLite Micro frees after QUANTIZE.
    assert tflm.arena_bytes == 1536 and tflm.peak_op.label == "CONV_2D conv3"
    assert litert.arena_bytes - tflm.arena_bytes == 3 * 8 * 8 * 4
    # With LiteRT's conventions (64-byte alignment, inputs kept) the plan equals LiteRT's arena exactly.
    assert plan_arena(residual_tflite, alignment=64, keep_inputs=True).arena_bytes == litert.arena_bytes
    # LiteRT's optimized kernels add im2col temporaries (measured 6,912 B in all, the largest 4,608 B =
    # 8×8 pixels × 3×3 kernel × 8 channels for conv2 / conv3), which TFLite Micro's kernels do not use.
    optimized = litert_allocation(residual_tflite, kernels="optimized")
    assert max(n for _, n in optimized.temporaries.values()) == 8 * 8 * 3 * 3 * 8
    assert optimized.arena_bytes > litert.arena_bytes


def test_litert_kernels_argument_is_checked(residual_tflite):
    from edgecompress.measure import litert_allocation

    with pytest.raises(UnsupportedError, match="'reference', 'optimized'"):
        litert_allocation(residual_tflite, kernels="fast")


def test_tflite_graph_names_its_layers_and_computes_in_int8(residual_tflite):
    graph = read_graph(residual_tflite)
    assert [op.layer for op in graph.ops if op.macs] == ["conv1", "conv2", "conv3", "fc"]
    assert {op.compute_dtype for op in graph.ops if op.macs} == {"int8"}
    assert plan_arena(graph).peak_live_bytes == 3 * 8 * 8 * 8  # conv3 reads y, writes z, x kept for the add


def test_onnx_with_external_data_is_planned_from_shapes_alone(tiny_onnx):
    # Linear(16, 32) + ReLU (fused) + Linear(32, 4) in float32: 64 + 128 bytes alive at the first Gemm
    for path in tiny_onnx.values():
        plan = plan_arena(path)
        assert plan.peak_live_bytes == plan.arena_bytes == 64 + 128 and plan.peak_op.index == 0
    assert read_graph(tiny_onnx["external"]).constant_bytes == read_graph(tiny_onnx["inline"]).constant_bytes
