"""One contract, every exporter: export → structural check → run in its runtime → parity with PyTorch."""

import numpy as np
import pytest
import torch

from edgecompress.errors import UnsupportedError
from edgecompress.export import EXPORTERS, check_supported, get_exporter
from edgecompress.quantization import QuantConfig, quantize
from edgecompress.testing.numeric import sqnr
from edgecompress.testing.tiny_models import TinyConv1d, TinyMLP, TinyResidual2d

CASES = [(name, scheme) for name, e in EXPORTERS.items() for scheme in sorted(e.schemes)]


def _model(cls, scheme, exporter):
    torch.manual_seed(0)
    model = cls().eval()
    if scheme == "int8":
        x = torch.cat([model.example_inputs(batch_size=16)[0] for _ in range(4)])
        config = QuantConfig(reduce_range=exporter.saturates_int8_weights())  # as the pipeline's "auto"
        return quantize(model, config, calibration=x), model
    return model, model


@pytest.mark.parametrize("fmt,scheme", CASES)
@pytest.mark.parametrize("cls", [TinyConv1d, TinyResidual2d, TinyMLP])
def test_export_runs_in_its_runtime_with_parity(tmp_path, fmt, scheme, cls):
    exporter = check_supported(fmt, scheme)
    model, _ = _model(cls, scheme, exporter)
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
    if scheme == "fp32":
        np.testing.assert_allclose(out, ref, atol=1e-4, rtol=1e-4)
    else:
        # Integer kernels requantize with their own rounding; measured 54.8 dB to ∞ on these models.
        assert sqnr(ref, out) > 35.0
        assert (out.argmax(-1) == ref.argmax(-1)).mean() >= 0.9


def test_int8_onnx_stores_integers_and_runs_integer_kernels(tmp_path):
    import onnx
    import onnxruntime as ort

    exporter = get_exporter("onnx")
    model, _ = _model(TinyResidual2d, "int8", exporter)
    artifact = exporter.export(model, TinyResidual2d().example_inputs(), tmp_path / "q.onnx", scheme="int8",
                               metadata={"edgecompress_version": "test"})
    proto = onnx.load(str(artifact.path))
    types = {i.name: i.data_type for i in proto.graph.initializer}
    weights = [n for n in types if n.endswith("weight_int")]
    assert weights and all(types[n] == onnx.TensorProto.INT8 for n in weights)
    assert not any(n.endswith(".weight") for n in types)  # no float copy of a quantized weight
    assert {p.key: p.value for p in proto.metadata_props}["edgecompress_version"] == "test"
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(artifact.path), options, providers=["CPUExecutionProvider"])
    ops = {n.op_type for n in onnx.load(options.optimized_model_filepath).graph.node}
    assert "QLinearConv" in ops  # ONNX Runtime fused our Q/DQ into integer convolutions


def test_unsupported_formats_and_schemes_fail_before_any_work():
    with pytest.raises(UnsupportedError, match="torchscript.*cannot carry int8"):
        check_supported("torchscript", "int8")
    with pytest.raises(UnsupportedError, match="'tflite' is not available"):
        get_exporter("tflite")
    with pytest.raises(UnsupportedError, match="unknown output format"):
        get_exporter("coreml")
