"""Dynamic INT8 (Q2): Linear / LSTM / GRU with int8 weights and run-time uint8 activations, simulated in
PyTorch and exported to ONNX as DynamicQuantizeLinear + MatMulInteger, run in ONNX Runtime."""

import copy
from collections import Counter

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper
from torch import nn

from edgecompress.errors import RecipeError, UnsupportedError
from edgecompress.export import get_exporter
from edgecompress.quantization.dynamic import (
    DynamicConfig,
    DynamicQuantizedGRU,
    DynamicQuantizedLinear,
    DynamicQuantizedLSTM,
    quantize_dynamic,
)
from edgecompress.quantization.dynamic_ops import dynamic_quantize
from edgecompress.testing import sqnr


class MLP(nn.Module):
    def __init__(self, width: int = 256) -> None:
        super().__init__()
        self.fc1 = nn.Linear(width, width)
        self.fc2 = nn.Linear(width, width)
        self.head = nn.Linear(width, 10)

    def forward(self, x):
        return self.head(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


class RecurrentClassifier(nn.Module):
    """Input (B, T, F) → recurrent layers → Linear on the last step's output."""

    def __init__(self, kind: type[nn.Module], features: int = 8, hidden: int = 32, **kwargs) -> None:
        super().__init__()
        self.rnn = kind(features, hidden, batch_first=True, **kwargs)
        self.head = nn.Linear(hidden * (2 if kwargs.get("bidirectional") else 1), 4)

    def forward(self, x):
        out, _ = self.rnn(x)
        return self.head(out[:, -1])


def lstm_classifier():
    return RecurrentClassifier(nn.LSTM, num_layers=2)


def gru_classifier():
    return RecurrentClassifier(nn.GRU, bidirectional=True)


def _model(make):
    torch.manual_seed(0)
    return make().eval()


def _inputs(model, batch):
    shape = (batch, 256) if isinstance(model, MLP) else (batch, 4, 8)
    return torch.randn(*shape, generator=torch.Generator().manual_seed(1))


def _onnx_dynamic_quantize(x: np.ndarray) -> list[np.ndarray]:
    graph = helper.make_graph(
        [helper.make_node("DynamicQuantizeLinear", ["x"], ["y", "s", "z"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info(n, t, None) for n, t in
         (("y", TensorProto.UINT8), ("s", TensorProto.FLOAT), ("z", TensorProto.UINT8))])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})


# --- the primitives -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("case", ["normal", "positive", "negative", "zeros", "wide"])
def test_dynamic_quantize_equals_onnx_runtime(case):
    g = torch.Generator().manual_seed(0)
    x = {"normal": torch.randn(4, 300, generator=g), "positive": torch.rand(50, generator=g) + 1,
         "negative": -torch.rand(7, 9, generator=g) - 0.5, "zeros": torch.zeros(3, 5),
         "wide": torch.randn(1000, generator=g) * 1e3 + 17}[case]
    q, scale, zero_point = dynamic_quantize(x)
    y, s, z = _onnx_dynamic_quantize(x.numpy())
    assert q.dtype == torch.uint8 and zero_point.dtype == torch.uint8 and scale.shape == ()
    np.testing.assert_array_equal(q.numpy(), y)  # bit-exact, including the all-zero case (scale 1)
    assert scale.item() == s and zero_point.item() == z


def test_linear_is_exactly_the_integer_product_rescaled():
    torch.manual_seed(0)
    layer = nn.Linear(40, 12)
    q = DynamicQuantizedLinear.from_float(layer, DynamicConfig())
    x = torch.randn(3, 5, 40)  # any leading dims
    xq, x_scale, x_zp = dynamic_quantize(x)
    x_dequantized = (xq.double() - x_zp.double()) * x_scale.double()
    expected = x_dequantized @ q.dequantized_weight().double().t() + layer.bias.double()
    assert q.weight_int.dtype == torch.int8 and q.weight_int.shape == (40, 12)
    assert int(q.weight_int.abs().max()) == 127
    torch.testing.assert_close(q(x).double(), expected, rtol=1e-6, atol=1e-6)


def test_config_is_validated():
    with pytest.raises(RecipeError, match="not a valid regular expression"):
        DynamicConfig(ignore=("re:(",))
    with pytest.raises(RecipeError, match="reduce_range"):
        DynamicConfig(reduce_range="auto")
    assert DynamicConfig(reduce_range=True).weight_bits == 7


# --- simulation against float ---------------------------------------------------------------------------------

def test_mlp_simulation_is_close_to_float_and_leaves_the_input_model_alone():
    model = _model(MLP)
    before = copy.deepcopy(model.state_dict())
    x = _inputs(model, 64)
    for config, threshold in ((DynamicConfig(), 32.0),  # measured 37.1 dB
                              (DynamicConfig(reduce_range=True), 29.0),  # measured 34.8 dB
                              (DynamicConfig(per_channel=False), 30.0)):  # measured 37.1 dB
        q = quantize_dynamic(model, config)
        assert all(isinstance(q.get_submodule(n), DynamicQuantizedLinear) for n in ("fc1", "fc2", "head"))
        with torch.no_grad():
            assert sqnr(model(x), q(x)) > threshold
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, before[key])


@pytest.mark.parametrize("kind", [nn.LSTM, nn.GRU])
@pytest.mark.parametrize("options", [dict(batch_first=True), dict(num_layers=2),
                                     dict(batch_first=True, num_layers=2, bidirectional=True, bias=False)])
def test_recurrent_simulation_matches_float_outputs_and_states(kind, options):
    torch.manual_seed(0)
    rnn = kind(8, 16, **options).eval()
    q = quantize_dynamic(rnn)
    assert isinstance(q, DynamicQuantizedLSTM if kind is nn.LSTM else DynamicQuantizedGRU)
    x = torch.randn(5, 7, 8)
    with torch.no_grad():
        out_f, state_f = rnn(x)
        out_q, state_q = q(x)
    states_f = state_f if isinstance(state_f, tuple) else (state_f,)
    states_q = state_q if isinstance(state_q, tuple) else (state_q,)
    assert out_q.shape == out_f.shape and [s.shape for s in states_q] == [s.shape for s in states_f]
    assert sqnr(out_f, out_q) > 33.0  # measured 38.6–51.2 dB over these cases (gate order checked by this)
    assert all(sqnr(f, s) > 33.0 for f, s in zip(states_f, states_q, strict=True))  # measured 40.4–47.0 dB


@pytest.mark.parametrize("kind", [nn.LSTM, nn.GRU])
def test_recurrent_initial_state_and_unbatched_input(kind):
    torch.manual_seed(0)
    rnn = kind(8, 16, num_layers=2).eval()
    q = quantize_dynamic(rnn)
    h0 = torch.randn(2, 3, 16)
    hx = (h0, torch.randn_like(h0)) if kind is nn.LSTM else h0
    x = torch.randn(6, 3, 8)
    with torch.no_grad():
        assert sqnr(rnn(x, hx)[0], q(x, hx)[0]) > 35.0  # measured 50.3 (LSTM), 46.8 (GRU) dB
        single = torch.randn(6, 8)
        assert q(single)[0].shape == rnn(single)[0].shape
        assert sqnr(rnn(single)[0], q(single)[0]) > 35.0  # measured 56.5, 40.4 dB


@pytest.mark.parametrize("make", [lstm_classifier, gru_classifier])
def test_recurrent_classifier_simulation(make):
    model = _model(make)
    x = _inputs(model, 32)
    q = quantize_dynamic(model)
    with torch.no_grad():
        assert sqnr(model(x), q(x)) > 35.0  # measured 49.8 dB (LSTM, 2 layers), 40.3 dB (GRU, bidirectional)


# --- layer selection ------------------------------------------------------------------------------------------

def test_ignore_by_exact_name_and_regex():
    model = _model(MLP)
    q = quantize_dynamic(model, DynamicConfig(ignore=("head", "re:fc[2-9]")))
    assert isinstance(q.fc1, DynamicQuantizedLinear)
    assert type(q.fc2) is nn.Linear and type(q.head) is nn.Linear
    rnn = quantize_dynamic(_model(lstm_classifier), DynamicConfig(ignore=("re:r.n",)))
    assert type(rnn.rnn) is nn.LSTM and isinstance(rnn.head, DynamicQuantizedLinear)


def test_unsupported_layers_are_refused_clearly():
    with pytest.raises(UnsupportedError, match="no Linear, LSTM or GRU"):
        quantize_dynamic(nn.Sequential(nn.Conv1d(1, 2, 3)))
    with pytest.raises(UnsupportedError, match="no Linear, LSTM or GRU"):
        quantize_dynamic(_model(MLP), DynamicConfig(ignore=("re:.*",)))
    with pytest.raises(UnsupportedError, match="proj_size"):
        quantize_dynamic(nn.LSTM(4, 8, proj_size=2))
    q = quantize_dynamic(nn.ModuleDict({"attn": nn.MultiheadAttention(16, 2), "fc": nn.Linear(16, 4)}))
    assert type(q["attn"].out_proj) is nn.modules.linear.NonDynamicallyQuantizableLinear  # read directly by MHA
    assert isinstance(q["fc"], DynamicQuantizedLinear)
    with pytest.raises(UnsupportedError, match="packed sequences"):
        quantize_dynamic(nn.GRU(4, 8))(nn.utils.rnn.pack_sequence([torch.randn(3, 4)]))


# --- ONNX export and ONNX Runtime ---------------------------------------------------------------------------

def _ops(path) -> Counter:
    return Counter(node.op_type for node in onnx.load(str(path)).graph.node)


def _optimized_ops(path, tmp_path) -> Counter:
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    options.log_severity_level = 3
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return _ops(tmp_path / "optimized.onnx")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(float model, quantized model, ONNX path), exported once per (model, reduce_range) for this module."""
    cache = {}

    def export(make, reduce_range: bool):
        if (make, reduce_range) not in cache:
            model = _model(make)
            q = quantize_dynamic(model, DynamicConfig(reduce_range=reduce_range))
            path = tmp_path_factory.mktemp("dynamic") / f"{make.__name__}.onnx"
            get_exporter("onnx").export(q, (_inputs(model, 1),), path, scheme="int8")
            cache[make, reduce_range] = model, q, path
        return cache[make, reduce_range]

    return export


# Integer products: MLP 3 layers; LSTM 2 layers × (1 input projection + 3 hidden ones, the first step's hidden
# state being zero, its projection just the bias) + head; GRU 2 directions × 4 + head.
@pytest.mark.parametrize("make,projections", [
    (MLP, 3), (lstm_classifier, 9),
    pytest.param(gru_classifier, 9, marks=pytest.mark.slow),  # ~8 s of export; same ops as the LSTM
])
def test_export_runs_integer_kernels_in_onnx_runtime_with_parity(make, projections, exported, tmp_path):
    exporter = get_exporter("onnx")
    # 7-bit weights where ONNX Runtime's u8s8 kernels saturate (x86 without VNNI), as the static path picks
    model, q, path = exported(make, exporter.saturates_int8_weights())
    ops = _ops(path)
    assert ops["MatMulInteger"] == projections
    # one per quantized tensor: the exporter shares it between the two directions' input projections
    assert 0 < ops["DynamicQuantizeLinear"] <= projections
    assert "MatMul" not in ops and "Gemm" not in ops
    weights = [i for i in onnx.load(str(path)).graph.initializer if len(i.dims) == 2]
    assert weights and all(i.data_type == TensorProto.INT8 for i in weights)
    optimized = _optimized_ops(path, tmp_path)
    # ONNX Runtime fuses each product with its rescale (and its quantizer when not shared) into one kernel
    assert optimized["DynamicQuantizeMatMul"] + optimized["MatMulIntegerToFloat"] == projections
    assert "MatMulInteger" not in optimized and "Cast" not in optimized
    run = exporter.runner(path, threads=1)
    x = _inputs(model, 16)
    with torch.no_grad():
        for batch in (x, x[:1]):  # the batch dimension stays dynamic
            torch.testing.assert_close(torch.from_numpy(run(batch.numpy())), q(batch), rtol=1e-5, atol=1e-6)
            # measured: bit-exact for the MLP and the GRU; LSTM at most 1.5e-8 apart (float gate arithmetic)


def test_full_range_weights_are_exact_unless_the_runtime_saturates(exported):
    exporter = get_exporter("onnx")
    model, q, path = exported(MLP, False)
    x = _inputs(model, 16)
    with torch.no_grad():
        parity = sqnr(q(x), torch.from_numpy(exporter.runner(path, threads=1)(x.numpy())))
    # measured 21.1 dB on x86 without VNNI (AVX2) (int16 pair sums saturate), so reduce_range is needed there
    assert (parity < 40.0) == exporter.saturates_int8_weights()


def test_int8_file_is_about_four_times_smaller_than_float(exported, tmp_path):
    exporter = get_exporter("onnx")
    model, _, int8_path = exported(MLP, exporter.saturates_int8_weights())
    float_path = exporter.export(model, (_inputs(model, 1),), tmp_path / "f.onnx", scheme="fp32").path
    ratio = float_path.stat().st_size / int8_path.stat().st_size
    assert ratio > 3.7  # measured 3.85 (537,959 → 139,901 bytes)
    weights = [i for i in onnx.load(str(int8_path)).graph.initializer if i.name.endswith("weight_int")]
    assert sorted(tuple(i.dims) for i in weights) == [(256, 10), (256, 256), (256, 256)]
    assert all(i.data_type == TensorProto.INT8 for i in weights)
