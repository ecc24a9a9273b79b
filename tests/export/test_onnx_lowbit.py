"""Low-bit weights in ONNX: really packed (INT4 / INT2 initializers, one bit per binary weight), run by ONNX
Runtime with the PyTorch simulation's outputs, Linear layers fused into MatMulNBits."""

from collections import Counter

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import helper, numpy_helper
from torch import nn

from edgecompress.export import get_exporter
from edgecompress.export.onnx_compact import compact
from edgecompress.export.onnx_lowbit import storage_type
from edgecompress.quantization import QuantConfig, QuantizedLayer, quantize


class ConvLinear(nn.Module):
    """A Conv1d (K = 8 × 5 = 40: a short last group at group size 32), a Linear too large for the exporter's
    constant folding (512 × 64 > 8192 weights, so our packing pass folds it) and a small Linear without bias."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(8, 32, 5, padding=2)
        self.fc = nn.Linear(32 * 16, 64)
        self.head = nn.Linear(64, 10, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv(x)).flatten(1)
        return self.head(torch.relu(self.fc(x)))


WEIGHTS = {"conv": 32 * 40, "fc": 512 * 64, "head": 64 * 10}
CASES = {  # name → (config keywords, bits stored per weight, ONNX type of weight_int, opset)
    "int4": (dict(weight_bits=4), 4, onnx.TensorProto.INT4, 21),
    "int2": (dict(weight_bits=2), 2, onnx.TensorProto.INT2, 25),
    "ternary": (dict(weight_bits=2, ternary=True), 2, onnx.TensorProto.INT2, 25),
    "binary": (dict(weight_bits=1), 1, onnx.TensorProto.UINT8, 21),
}


def _quantized(tmp_path, name, **config):
    torch.manual_seed(0)
    model = ConvLinear().eval()
    x = torch.randn(32, 8, 16)
    q = quantize(model, QuantConfig(group_size=32, **config), calibration=x)
    path = get_exporter("onnx").export(q, (x[:1],), tmp_path / f"{name}.onnx", scheme="int4").path
    return q, x, path


def _ort_parity(q, x, path):
    out = get_exporter("onnx").runner(path, threads=1)(x.numpy())
    with torch.no_grad():
        ref = q(x).numpy()
    # weight-only: float compute on the same dequantized weights, so only summation order differs
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)


def _optimized_ops(path, tmp_path) -> Counter:
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / f"{path.stem}.opt.onnx")
    options.add_session_config_entry("session.qdq_matmulnbits_accuracy_level", "1")
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return Counter(n.op_type for n in onnx.load(options.optimized_model_filepath).graph.node)


@pytest.mark.parametrize("case", list(CASES))
def test_low_bit_weights_are_packed_and_run_with_parity(tmp_path, case):
    config, bits, dtype, opset = CASES[case]
    q, x, path = _quantized(tmp_path, case, weight_only=True, **config)
    _ort_parity(q, x, path)
    proto = onnx.load(str(path))
    assert proto.opset_import[0].version == opset
    inits = {i.name: i for i in proto.graph.initializer}
    suffix = "weight_int_bits" if case == "binary" else "weight_int"
    for layer, count in WEIGHTS.items():
        stored = inits[f"{layer}.{suffix}"]
        assert stored.data_type == dtype
        # the bytes really are bits/8 of the int8 weights (int8: one byte per weight)
        assert len(stored.raw_data) == -(-count * bits // 8)
        assert f"{layer}.weight" not in inits  # no float copy
        if case != "binary":
            assert f"{layer}.weight_zero_point" not in inits  # symmetric: zero points are the default 0
        # group scales are float16 numbers, stored in float16 unless the Cast back costs more than it saves
        # (the head's 20 scales)
        half = inits.get(f"{layer}.weight_scale_f16")
        assert (half is not None) is (layer != "head")
        scale = numpy_helper.to_array(half if half is not None else inits[f"{layer}.weight_scale"])
        np.testing.assert_array_equal(scale.astype(np.float16).astype(np.float32), scale.astype(np.float32))
    if case in ("int4", "int2"):
        # ONNX Runtime fuses DequantizeLinear(blocked int4/int2) → MatMul into MatMulNBits; not the 2-bit head
        # (10 outputs), whose rows do not start on a byte, which ONNX Runtime 1.32's fusion gets wrong
        assert _optimized_ops(path, tmp_path)["MatMulNBits"] == (2 if case == "int4" else 1)


def test_asymmetric_and_static_low_bit_weights_export_exactly(tmp_path):
    q, x, path = _quantized(tmp_path, "asym", weight_bits=4, weight_only=True, weight_symmetric=False)
    _ort_parity(q, x, path)
    inits = {i.name: i for i in onnx.load(str(path)).graph.initializer}
    assert inits["fc.weight_zero_point"].data_type == onnx.TensorProto.INT4
    assert _optimized_ops(path, tmp_path)["MatMulNBits"] == 2  # with zero points too
    # static: 8-bit activations around 4-bit weights; the runtime computes on the same fake-quantized values
    q, x, path = _quantized(tmp_path, "static", weight_bits=4)
    out = get_exporter("onnx").runner(path, threads=1)(x.numpy())
    with torch.no_grad():
        ref = q(x).numpy()
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4)
    types = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert "QuantizeLinear" in types


def test_storage_types():
    assert storage_type(-1, 1) == onnx.TensorProto.INT2 and storage_type(0, 3) == onnx.TensorProto.UINT2
    assert storage_type(-4, 3) == onnx.TensorProto.INT4  # 3-bit weights travel in int4 containers
    assert storage_type(-8, 7) == onnx.TensorProto.INT4 and storage_type(-64, 63) == onnx.TensorProto.INT8
    with pytest.raises(ValueError):
        storage_type(-300, 300)


def _cast_graph(scale: np.ndarray, codes: np.ndarray) -> onnx.ModelProto:
    """Reshape(int8 initializer) → Cast(INT4) → blocked DequantizeLinear → Reshape → Conv, as the exporter
    leaves a large conv weight."""
    out, k = scale.shape[0], codes[0].size
    inits = [numpy_helper.from_array(codes, "conv.weight_int"), numpy_helper.from_array(scale, "conv.weight_scale"),
             numpy_helper.from_array(np.array([out, k], np.int64), "flat"),
             numpy_helper.from_array(np.array(codes.shape, np.int64), "shape")]
    nodes = [helper.make_node("Reshape", ["conv.weight_int", "flat"], ["q2"]),
             helper.make_node("Cast", ["q2"], ["q4"], to=onnx.TensorProto.INT4),
             helper.make_node("DequantizeLinear", ["q4", "conv.weight_scale"], ["w2"], axis=1, block_size=16),
             helper.make_node("Reshape", ["w2", "shape"], ["w"]),
             helper.make_node("Conv", ["input", "w"], ["output"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, [1, 4, 8])],
                              [helper.make_tensor_value_info("output", onnx.TensorProto.FLOAT, [1, out, 1])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], ir_version=10)


def _run(proto, x):
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"input": x})[0]


def test_packing_pass_folds_casts_and_halves_scales_only_when_exact():
    rng = np.random.default_rng(0)
    codes = rng.integers(-8, 8, size=(48, 4, 8)).astype(np.int8)
    x = rng.standard_normal((1, 4, 8)).astype(np.float32)
    for scale, half in ((np.full((48, 2), 0.375, np.float32), True), (rng.random((48, 2)).astype(np.float32), False)):
        plain = _cast_graph(scale, codes)
        packed = compact(_cast_graph(scale, codes))
        onnx.checker.check_model(packed, full_check=True)
        inits = {i.name: i for i in packed.graph.initializer}
        assert inits["conv.weight_int"].data_type == onnx.TensorProto.INT4
        assert len(inits["conv.weight_int"].raw_data) == codes.size // 2
        assert ("conv.weight_scale_f16" in inits) is half and ("conv.weight_scale" in inits) is not half
        assert [n.op_type for n in packed.graph.node].count("Cast") == int(half)  # the weight Cast is gone
        np.testing.assert_array_equal(_run(packed, x), _run(plain, x))


def test_binary_packing_is_exact_for_any_count_of_weights(tmp_path):
    """One bit per weight, little-endian within each byte; counts that are not a multiple of 8 are sliced."""
    torch.manual_seed(0)
    layer = QuantizedLayer(nn.Linear(13, 3), bits=1, group_size=16, weight_only=True)  # 39 weights
    layer.convert(None)
    x = torch.randn(5, 13)

    class Wrap(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = layer

        def forward(self, t):
            return self.fc(t)

    path = get_exporter("onnx").export(Wrap(), (x[:1],), tmp_path / "b.onnx", scheme="binary").path
    inits = {i.name: i for i in onnx.load(str(path)).graph.initializer}
    assert len(inits["fc.weight_int_bits"].raw_data) == 5  # ceil(39 / 8)
    out = get_exporter("onnx").runner(path, threads=1)(x.numpy())
    with torch.no_grad():
        np.testing.assert_allclose(out, layer(x).numpy(), rtol=1e-6, atol=1e-6)
