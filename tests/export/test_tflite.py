"""TFLite export (E2): fp32 / fp16 / full-integer int8 through litert-torch, run in the LiteRT interpreter,
with parity against PyTorch; int8 artifacts carry edgecompress's integers and scales, not the converter's."""

import sys

import numpy as np
import pytest
import torch

from edgecompress.errors import ExportError, MissingDependencyError, UnsupportedError
from edgecompress.export import tflite_flatbuffer as fb
from edgecompress.export.tflite import TfliteExporter, check_carried, read_metadata
from edgecompress.quantization import ActivationQuantizer, QuantConfig, QuantizedLayer, quantize, quantize_dynamic
from edgecompress.quantization.fp16 import HalfPrecision
from edgecompress.testing.numeric import sqnr
from edgecompress.testing.tiny_models import TinyConv1d, TinyMLP, TinyResidual2d

MODELS = [TinyConv1d, TinyResidual2d, TinyMLP]
_CACHE: dict = {}


def _models(cls, activation_dtype="int8", ignore=()):
    torch.manual_seed(0)
    model = cls().eval()
    calibration = torch.cat([model.example_inputs(batch_size=16)[0] for _ in range(4)])
    config = QuantConfig(activation_dtype=activation_dtype, ignore=ignore)
    return model, quantize(model, config, calibration=calibration)


def _export(tmp_path_factory, cls, scheme, **options):
    """One export per (model, scheme, options) for the whole module: each conversion takes seconds."""
    key = (cls, scheme, tuple(sorted(options.items())))
    if key not in _CACHE:
        integer_io = options.pop("integer_io", False)
        model, qmodel = _models(cls, **options)
        path = tmp_path_factory.mktemp("tflite") / f"{cls.__name__}_{scheme}.tflite"
        artifact = TfliteExporter(integer_io=integer_io).export(
            qmodel if scheme == "int8" else model, model.example_inputs(), path, scheme=scheme,
            metadata={"edgecompress_version": "test"})
        _CACHE[key] = (model, qmodel, artifact)
    return _CACHE[key]


def _inputs(cls, batch_size):
    torch.manual_seed(1)
    return torch.cat([cls().example_inputs(batch_size=batch_size)[0]])


def _check_parity(scheme, reference, out):
    assert out.shape == reference.shape
    if scheme == "fp32":
        torch.testing.assert_close(torch.from_numpy(out), torch.from_numpy(reference), atol=1e-4, rtol=1e-4)
    elif scheme == "fp16":
        assert sqnr(reference, out) > 55.0  # float16 weights vs the float32 model: measured 71.0 / 76.8 / 73.1 dB
    else:
        # Against our simulation (same integers and scales): measured inf / 52.9 / inf dB. Average pooling is the
        # only inexact step: the mean of 16 int8 values often lands on a rounding tie that TFLite's MEAN breaks
        # its own way.
        assert sqnr(reference, out) > 40.0
        assert (out.argmax(-1) == reference.argmax(-1)).mean() >= 0.95  # measured 1.0


def _run_and_compare(tmp_path_factory, cls, scheme):
    model, qmodel, artifact = _export(tmp_path_factory, cls, scheme)
    assert artifact.path.is_file() and artifact.format == "tflite" and artifact.scheme == scheme
    assert not [p for p in artifact.path.parent.iterdir() if p.name.endswith(".tmp")]  # written atomically
    run = TfliteExporter().runner(artifact.path, threads=1)
    reference_model = qmodel if scheme == "int8" else model
    for batch_size in (1, 8, 1):  # back to 1 after a larger batch: the runner resizes both ways
        x = _inputs(cls, batch_size)
        with torch.no_grad():
            reference = reference_model(x).numpy()
        _check_parity(scheme, reference, run(x.numpy()))


# Fast representative: the residual 2-D model in int8 exercises conv, add, pooling and the float interface.
def test_int8_residual_runs_in_litert_with_parity(tmp_path_factory):
    _run_and_compare(tmp_path_factory, TinyResidual2d, "int8")


@pytest.mark.slow
@pytest.mark.parametrize("scheme", ["fp32", "fp16", "int8"])
@pytest.mark.parametrize("cls", MODELS)
def test_each_scheme_runs_in_litert_with_parity(tmp_path_factory, cls, scheme):
    _run_and_compare(tmp_path_factory, cls, scheme)


def test_int8_artifact_holds_our_integers_and_scales(tmp_path_factory):
    _, qmodel, artifact = _export(tmp_path_factory, TinyResidual2d, "int8")
    flat = fb.read(artifact.path.read_bytes())
    consts = fb.constants(flat)
    layers = [m for m in qmodel.modules() if isinstance(m, QuantizedLayer)]
    int8_weights = [c for c in consts if c.dtype == "int8"]
    assert len(int8_weights) == len(layers) == 4
    for layer in layers:
        scales = layer.weight_scale.numpy()
        (weight,) = [c for c in int8_weights if np.array_equal(c.scales, scales)]  # our scales, bit for bit
        assert not weight.zero_points.any()
        ohwi = layer.weight_int.permute(0, 2, 3, 1) if layer.kind == "conv2d" else layer.weight_int
        np.testing.assert_array_equal(weight.data, ohwi.numpy())  # our integers, TFLite's OHWI layout
        (bias,) = [c for c in consts if c.dtype == "int32" and c.data.shape == tuple(layer.bias_int.shape)
                   and np.array_equal(c.data, layer.bias_int.numpy())]
        np.testing.assert_allclose(bias.scales, layer.bias_scale.numpy(), rtol=1e-6)
    # Every int8 activation tensor carries one of our quantizers' scale and zero point.
    ours = {(np.float32(float(q.scale)).item(), int(q.zero_point))
            for q in qmodel.modules() if isinstance(q, ActivationQuantizer)}
    activations = {(np.float32(t.quantization.scale[0]).item(), int(t.quantization.zeroPoint[0]))
                   for t in flat.subgraphs[0].tensors if t.type == 9 and t.buffer == 0}
    assert activations and activations <= ours
    assert read_metadata(artifact.path)["edgecompress_version"] == "test"
    assert read_metadata(artifact.path)["edgecompress.interface"] == "float32"


def test_carried_check_refuses_integers_that_differ_from_ours(tmp_path_factory):
    _, qmodel, artifact = _export(tmp_path_factory, TinyResidual2d, "int8")
    flat = fb.read(artifact.path.read_bytes())
    check_carried(flat, qmodel)  # the exported file passes
    layer = qmodel.get_submodule("conv2")
    saved = layer.weight_int.clone()
    try:
        layer.weight_int[0].view(-1)[0] += 1 if saved[0].view(-1)[0] < 127 else -1
        with pytest.raises(ExportError, match="'conv2'.*int8 weights"):
            check_carried(flat, qmodel)
    finally:
        layer.weight_int.copy_(saved)


@pytest.mark.slow
def test_uint8_activations_map_exactly_onto_tflite_int8(tmp_path_factory):
    _, qmodel, artifact = _export(tmp_path_factory, TinyConv1d, "int8", activation_dtype="uint8")
    first = qmodel.get_submodule("x_quant")
    flat = fb.read(artifact.path.read_bytes())
    graph = flat.subgraphs[0]
    (quantize_input,) = [op for op in graph.operators if graph.inputs[0] in list(op.inputs)]
    quantized_input = graph.tensors[quantize_input.outputs[0]]
    assert quantized_input.quantization.zeroPoint[0] == int(first.zero_point) - 128  # same grid, shifted
    x = _inputs(TinyConv1d, 8)
    with torch.no_grad():
        reference = qmodel(x).numpy()
    out = TfliteExporter().runner(artifact.path, threads=1)(x.numpy())
    assert sqnr(reference, out) > 40.0  # measured inf
    assert (out.argmax(-1) == reference.argmax(-1)).mean() >= 0.95


@pytest.mark.slow
def test_integer_io_keeps_int8_inputs_and_outputs(tmp_path_factory):
    from ai_edge_litert.interpreter import Interpreter

    _, qmodel, artifact = _export(tmp_path_factory, TinyMLP, "int8", integer_io=True)
    interpreter = Interpreter(model_path=str(artifact.path))
    assert interpreter.get_input_details()[0]["dtype"] == np.int8
    assert interpreter.get_output_details()[0]["dtype"] == np.int8
    scale, zero_point = interpreter.get_input_details()[0]["quantization"]
    first = qmodel.get_submodule("x_quant")
    assert np.float32(scale) == first.scale.item() and zero_point == int(first.zero_point)
    assert read_metadata(artifact.path)["edgecompress.interface"] == "int8"
    x = _inputs(TinyMLP, 8)
    with torch.no_grad():
        reference = qmodel(x).numpy()
    out = TfliteExporter().runner(artifact.path, threads=1)(x.numpy())  # the runner quantizes / dequantizes
    assert sqnr(reference, out) > 40.0  # measured inf


@pytest.mark.slow
def test_ignored_layer_stays_float_and_is_not_quantized_by_the_converter(tmp_path_factory):
    _, qmodel, artifact = _export(tmp_path_factory, TinyResidual2d, "int8", ignore=("conv3",))
    consts = fb.constants(fb.read(artifact.path.read_bytes()))
    assert len([c for c in consts if c.dtype == "int8"]) == 3  # conv1, conv2, fc: not conv3
    assert [c for c in consts if c.dtype == "float32" and c.data.shape == (8, 3, 3, 8)]  # conv3, float OHWI
    x = _inputs(TinyResidual2d, 8)
    with torch.no_grad():
        reference = qmodel(x).numpy()
    assert sqnr(reference, TfliteExporter().runner(artifact.path, threads=1)(x.numpy())) > 40.0  # measured inf
    _, float_head = _models(TinyMLP, ignore=("fc2",))
    with pytest.raises(UnsupportedError, match="stay float"):
        TfliteExporter(integer_io=True).export(float_head, TinyMLP().example_inputs(),
                                               artifact.path.parent / "io.tflite", scheme="int8")


@pytest.mark.slow
@pytest.mark.parametrize("cls", MODELS)
def test_weight_storage_shrinks_with_the_scheme(tmp_path_factory, cls):
    stored = {}
    for scheme in ("fp32", "fp16", "int8"):
        _, _, artifact = _export(tmp_path_factory, cls, scheme)
        stored[scheme] = fb.constant_bytes(fb.read(artifact.path.read_bytes()))
    weights = sum(p.numel() for name, p in cls().named_parameters() if name.endswith("weight") and p.dim() > 1)
    assert stored["fp32"]["float32"] >= 4 * weights
    assert stored["fp16"]["float16"] == 2 * weights  # every conv / linear weight in half
    assert stored["int8"]["int8"] == weights  # one byte per weight
    assert "float32" not in stored["int8"]  # no float copy of any weight or bias
    total = {s: sum(v.values()) for s, v in stored.items()}
    # Constant bytes vs fp32 (measured): fp16 0.51-0.52, int8 0.27-0.29 (biases stay 4 bytes each).
    assert 0.45 < total["fp16"] / total["fp32"] < 0.6
    assert 0.2 < total["int8"] / total["fp32"] < 0.36


def test_schemes_and_models_that_do_not_match_fail_before_conversion(tmp_path):
    model, qmodel = _models(TinyMLP)
    exporter = TfliteExporter()
    with pytest.raises(UnsupportedError, match="needs edgecompress's quantized representation"):
        exporter.export(model, model.example_inputs(), tmp_path / "m.tflite", scheme="int8")
    with pytest.raises(UnsupportedError, match="needs a float model"):
        exporter.export(qmodel, model.example_inputs(), tmp_path / "m.tflite", scheme="fp16")
    with pytest.raises(UnsupportedError, match="cannot carry 'int4'"):
        exporter.export(model, model.example_inputs(), tmp_path / "m.tflite", scheme="int4")
    assert not list(tmp_path.iterdir())


def test_int8_refuses_what_tflite_int8_kernels_cannot_carry(tmp_path):
    model = TinyMLP().eval()
    x = torch.cat([model.example_inputs(batch_size=16)[0] for _ in range(2)])
    exporter = TfliteExporter()
    low_bit = quantize(model, QuantConfig(weight_bits=4, weight_only=True, group_size=8), calibration=x)
    with pytest.raises(UnsupportedError, match=r"'fc1' has weight-only .*4-bit weights, group-wise scales"):
        exporter.export(low_bit, model.example_inputs(), tmp_path / "m.tflite", scheme="int8")
    dynamic = quantize_dynamic(model)
    with pytest.raises(UnsupportedError, match="cannot carry fc1 \\(DynamicQuantizedLinear\\)"):
        exporter.export(dynamic, model.example_inputs(), tmp_path / "m.tflite", scheme="int8")
    with pytest.raises(UnsupportedError, match="needs a float model.*HalfPrecision"):
        exporter.export(HalfPrecision(model), model.example_inputs(), tmp_path / "m.tflite", scheme="fp32")
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_fp16_of_a_half_precision_model_stores_its_half_weights(tmp_path):
    torch.manual_seed(0)
    half = HalfPrecision(TinyConv1d().eval())
    artifact = TfliteExporter().export(half, TinyConv1d().example_inputs(), tmp_path / "h.tflite", scheme="fp16")
    stored = [c.data for c in fb.constants(fb.read(artifact.path.read_bytes())) if c.dtype == "float16"]
    assert sorted(float(v) for d in stored for v in d.ravel()) == sorted(
        float(v) for name, p in half.model.named_parameters() if name.endswith("weight") and p.dim() > 1
        for v in p.detach().ravel())  # the wrapper's half weights, unchanged
    x = _inputs(TinyConv1d, 8)
    with torch.no_grad():
        reference = half(x).numpy()
    # TFLite computes in float32 with those weights, the wrapper in float16: measured 70.7 dB.
    assert sqnr(reference, TfliteExporter().runner(artifact.path, threads=1)(x.numpy())) > 50.0


def test_missing_extra_names_the_install_command(tmp_path, monkeypatch):
    model = TinyMLP().eval()
    monkeypatch.setitem(sys.modules, "litert_torch", None)  # import litert_torch now raises ImportError
    with pytest.raises(MissingDependencyError, match=r"pip install edgecompress\[tflite\]"):
        TfliteExporter().export(model, model.example_inputs(), tmp_path / "m.tflite", scheme="fp32")
    monkeypatch.setitem(sys.modules, "ai_edge_litert", None)
    with pytest.raises(MissingDependencyError, match=r"ai_edge_litert.*pip install edgecompress\[tflite\]"):
        TfliteExporter().runner(tmp_path / "m.tflite")
    assert not (tmp_path / "m.tflite").exists()
