"""One contract, every exporter: export → structural check → run in its runtime → parity with PyTorch."""

import numpy as np
import pytest
import torch

from edgecompress.errors import UnsupportedError
from edgecompress.export import EXPORTERS, check_supported, get_exporter
from edgecompress.quantization import QuantConfig, quantize
from edgecompress.quantization.fp16 import HalfPrecision
from edgecompress.testing.numeric import sqnr
from edgecompress.testing.tiny_models import TinyConv1d, TinyMLP, TinyResidual2d

# TFLite conversion takes seconds per model (litert-torch), so its cases run in the slow suite.
CASES = [pytest.param(name, scheme, marks=[pytest.mark.slow] if name == "tflite" else [])
         for name, e in EXPORTERS.items() for scheme in sorted(e.schemes)]


LOW_BIT = {"int4": dict(weight_bits=4), "int3": dict(weight_bits=3), "int2": dict(weight_bits=2),
           "ternary": dict(weight_bits=2, ternary=True), "binary": dict(weight_bits=1)}


def _model(cls, scheme, exporter):
    """The model in the representation ``scheme`` exports, and the PyTorch module it must agree with."""
    torch.manual_seed(0)
    model = cls().eval()
    x = torch.cat([model.example_inputs(batch_size=16)[0] for _ in range(4)])
    reduce_range = exporter.saturates_int8_weights()  # as the pipeline's "auto"
    if scheme == "int8":
        return quantize(model, QuantConfig(reduce_range=reduce_range), calibration=x)
    if scheme in LOW_BIT:
        return quantize(model, QuantConfig(weight_only=True, group_size=8, **LOW_BIT[scheme]), calibration=x)
    if scheme == "mixed":  # the first layer in 4 bits, the others static INT8
        first = next(n for n, m in model.named_modules() if isinstance(m, (torch.nn.Conv1d, torch.nn.Conv2d,
                                                                           torch.nn.Linear)))
        return quantize(model, QuantConfig(reduce_range=reduce_range, layer_bits=((first, 4),), group_size=8),
                        calibration=x)
    if scheme == "fp16":
        return HalfPrecision(model)
    return model


@pytest.mark.parametrize("fmt,scheme", CASES)
@pytest.mark.parametrize("cls", [TinyConv1d, TinyResidual2d, TinyMLP])
def test_export_runs_in_its_runtime_with_parity(tmp_path, fmt, scheme, cls):
    exporter = check_supported(fmt, scheme)
    model = _model(cls, scheme, exporter)
    example = cls().example_inputs()
    artifact = exporter.export(model, example, tmp_path / f"m{exporter.suffix}", scheme=scheme)
    assert artifact.path.is_file() and artifact.path.stat().st_size > 0
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # written atomically
    run = exporter.runner(artifact.path, threads=1)
    x = torch.cat([cls().example_inputs(batch_size=8)[0] for _ in range(4)])  # any batch size
    with torch.no_grad():
        ref = model(x).numpy()
    out = run(x.numpy())
    assert out.shape == ref.shape
    if scheme == "fp32" or scheme in LOW_BIT:  # float compute (low-bit weights are dequantized in the graph)
        np.testing.assert_allclose(out, ref, atol=1e-4, rtol=1e-4)
    elif scheme == "fp16":
        assert sqnr(ref, out) > 50.0  # kernels round float16 differently; measured 69.5–70.2 dB ORT, ∞ TorchScript
    else:
        # Integer kernels requantize with their own rounding; measured 54.8 dB to ∞ on these models.
        assert sqnr(ref, out) > 35.0
        assert (out.argmax(-1) == ref.argmax(-1)).mean() >= 0.9


def test_int8_onnx_stores_integers_and_runs_integer_kernels(tmp_path):
    import onnx
    import onnxruntime as ort

    exporter = get_exporter("onnx")
    model = _model(TinyResidual2d, "int8", exporter)
    artifact = exporter.export(model, TinyResidual2d().example_inputs(), tmp_path / "q.onnx", scheme="int8",
                               metadata={"edgecompress_version": "test"})
    proto = onnx.load(str(artifact.path))
    types = {i.name: i.data_type for i in proto.graph.initializer}
    weights = [n for n in types if n.endswith("weight_int")]
    assert weights and all(types[n] == onnx.TensorProto.INT8 for n in weights)
    assert not any(n.endswith(".weight") for n in types)  # no float copy of a quantized weight
    assert {p.key: p.value for p in proto.metadata_props}["edgecompress_version"] == "test"
    # the exporter's debugging data is gone: the graph signature alone was 29 KB on MobileNetV2
    assert not proto.graph.metadata_props and not proto.graph.value_info
    assert not any(n.metadata_props or n.doc_string for n in proto.graph.node)
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(artifact.path), options, providers=["CPUExecutionProvider"])
    ops = {n.op_type for n in onnx.load(options.optimized_model_filepath).graph.node}
    assert "QLinearConv" in ops  # ONNX Runtime fused our Q/DQ into integer convolutions


def test_unsupported_formats_and_schemes_fail_before_any_work():
    with pytest.raises(UnsupportedError, match="torchscript.*cannot carry int8"):
        check_supported("torchscript", "int8")
    with pytest.raises(UnsupportedError, match="format 'tflite' cannot carry int4"):
        check_supported("tflite", "int4")
    with pytest.raises(UnsupportedError, match="unknown output format"):
        get_exporter("coreml")
