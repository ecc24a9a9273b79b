"""Reference models: the registry, the graph-capture contract (torch.fx, torch.export, ONNX via dynamo) on
every architecture, and pretrained weights trained once, cached as safetensors and never trusted blindly."""

import contextlib
import dataclasses
import importlib
import io
import re
import time
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from edgecompress.errors import ModelLoadError, UnsupportedError
from edgecompress.models import (
    REFERENCE_MODELS,
    MobileNetV2Small,
    ResNetSmall,
    TinyTransformer,
    build_model,
    pretrained,
    pretrained_accuracy,
    weights_path,
)

# The module, not the function of the same name that edgecompress.models re-exports.
pretrained_module = importlib.import_module("edgecompress.models.pretrained")

SAMPLE_SHAPES = {"builtin:mnist1d": (1, 40), "builtin:digits": (1, 8, 8)}
# The same classes at a fraction of the size: every code path (stride-2 blocks, expand-free and residual
# inverted blocks, identity and 1x1-conv shortcuts, attention) with few enough nodes that exporting all
# seven to ONNX stays fast. The full-size models are traced with torch.fx below.
SMALL = {
    "mnist1d_cnn": {}, "digits_cnn": {},
    "mobilenetv2_mnist1d": {"settings": ((1, 8, 1, 1), (2, 8, 2, 2)), "stem_channels": 8, "head_channels": 16},
    "mobilenetv2_digits": {"settings": ((1, 8, 1, 1), (2, 8, 2, 2)), "stem_channels": 8, "head_channels": 16},
    "resnet_mnist1d": {"widths": (8, 8, 16), "blocks_per_stage": (1, 1, 1)},
    "resnet_digits": {"widths": (8, 8, 16), "blocks_per_stage": (1, 1, 1)},
    "transformer_mnist1d": {"dim": 16, "heads": 2, "depth": 1},
}


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGECOMPRESS_CACHE", str(tmp_path / "cache"))


def _n_params(model):
    return sum(p.numel() for p in model.parameters())


def test_registry_names_and_settings():
    assert set(REFERENCE_MODELS) == set(SMALL)
    for name, info in REFERENCE_MODELS.items():
        assert info.name == name and info.dataset in SAMPLE_SHAPES and info.description
        assert info.epochs > 0 and info.lr > 0 and info.batch_size > 0 and info.weight_decay >= 0
    with pytest.raises(dataclasses.FrozenInstanceError):
        REFERENCE_MODELS["mnist1d_cnn"].epochs = 1
    with pytest.raises(TypeError):
        REFERENCE_MODELS["x"] = REFERENCE_MODELS["mnist1d_cnn"]  # read-only mapping: no global mutable state


def test_unknown_names_list_the_allowed_ones():
    with pytest.raises(ModelLoadError, match=r"unknown reference model 'vgg'; available: mnist1d_cnn, digits_cnn"):
        build_model("vgg")
    with pytest.raises(ModelLoadError, match="unknown reference model"):
        pretrained("vgg")
    with pytest.raises(ModelLoadError, match=r"cannot build 'digits_cnn' with \{'colour': True\}"):
        build_model("digits_cnn", colour=True)


@pytest.mark.parametrize("name", list(REFERENCE_MODELS))
def test_full_size_model_shapes_names_and_fx_trace(name):
    torch.manual_seed(0)
    model = build_model(name).eval()
    (x,) = model.example_inputs(batch_size=3)
    assert tuple(x.shape[1:]) == SAMPLE_SHAPES[REFERENCE_MODELS[name].dataset]
    with torch.no_grad():
        out = model(x)
        traced = torch.fx.symbolic_trace(model)
        torch.testing.assert_close(traced(x), out, rtol=0, atol=0)
    assert out.shape == (3, 10) and torch.isfinite(out).all()
    layers = [n for n, m in model.named_modules() if isinstance(m, nn.Conv1d | nn.Conv2d | nn.Linear)]
    assert layers and all(re.fullmatch(r"[a-z_]+\d*", n.split(".")[-1]) for n in layers), layers  # conv1, fc, qkv


# Measured parameter counts; the MobileNetV2 and ResNet nets are sized so that weights dominate the ONNX file.
@pytest.mark.parametrize("name,low,high", [
    ("mnist1d_cnn", 5_210, 5_210), ("digits_cnn", 24_170, 24_170),
    ("mobilenetv2_mnist1d", 100_000, 500_000), ("mobilenetv2_digits", 100_000, 500_000),
    ("resnet_mnist1d", 100_000, 500_000), ("resnet_digits", 100_000, 500_000),
    ("transformer_mnist1d", 30_000, 150_000),
])
def test_parameter_counts(name, low, high):
    assert low <= _n_params(build_model(name)) <= high


def _small(name):
    torch.manual_seed(0)
    return build_model(name, **SMALL[name]).eval()


@pytest.mark.parametrize("name", list(REFERENCE_MODELS))
def test_torch_export_with_a_dynamic_batch(name):
    model = _small(name)
    program = torch.export.export(model, model.example_inputs(batch_size=2),
                                  dynamic_shapes=({0: torch.export.Dim("batch")},))
    (x,) = model.example_inputs(batch_size=5)
    with torch.no_grad():
        torch.testing.assert_close(program.module()(x), model(x), rtol=1e-5, atol=1e-6)


class _AllModels(nn.Module):
    """Every reference architecture side by side: one ONNX export instead of seven, because each export
    pays ~1 s of fixed set-up in the exporter."""

    def __init__(self):
        super().__init__()
        self.nets = nn.ModuleList(_small(name) for name in REFERENCE_MODELS)

    def forward(self, inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        return tuple(net(x) for net, x in zip(self.nets, inputs, strict=True))


@pytest.fixture(scope="module")
def onnx_outputs():
    """ONNX Runtime's and PyTorch's outputs of every architecture at batch 5, exported at batch 2 with
    torch.onnx.export(dynamo=True) and a dynamic batch dimension."""
    import onnxruntime as ort

    model = _AllModels().eval()
    example = tuple(net.example_inputs(batch_size=2)[0] for net in model.nets)
    batch = torch.export.Dim("batch")
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(model, (example,), dynamo=True, optimize=False, verbose=False,
                                    dynamic_shapes=(tuple({0: batch} for _ in example),))
    session = ort.InferenceSession(program.model_proto.SerializeToString(), providers=["CPUExecutionProvider"])
    inputs = tuple(net.example_inputs(batch_size=5)[0] for net in model.nets)
    outputs = session.run(None, {i.name: x.numpy() for i, x in zip(session.get_inputs(), inputs, strict=True)})
    with torch.no_grad():
        reference = model(inputs)
    return dict(zip(REFERENCE_MODELS, zip(outputs, reference, strict=True), strict=True))


@pytest.mark.parametrize("name", list(REFERENCE_MODELS))
def test_onnx_export_runs_in_onnxruntime_with_parity(onnx_outputs, name):
    out, ref = onnx_outputs[name]
    assert out.shape == (5, 10)
    np.testing.assert_allclose(out, ref.numpy(), rtol=1e-4, atol=1e-5)


def test_transformer_attention_is_written_out_op_by_op():
    model = TinyTransformer()
    graph = torch.fx.symbolic_trace(model).graph
    functions = {n.target for n in graph.nodes if n.op == "call_function"}
    assert torch.matmul in functions and torch.softmax in functions
    assert torch.nn.functional.scaled_dot_product_attention not in functions
    assert not any(isinstance(m, nn.MultiheadAttention) for m in model.modules())
    linears = {n for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    assert {"blocks.0.attn.qkv", "blocks.0.attn.proj", "blocks.1.fc1", "blocks.1.fc2", "head"} <= linears
    assert isinstance(model.pos_embed, nn.Parameter) and model.pos_embed.shape == (1, 10, 64)


def test_mobilenetv2_blocks():
    model = MobileNetV2Small(dims=2, input_size=8)
    blocks = list(model.blocks)
    assert not blocks[0].has_expand and all(b.has_expand for b in blocks[1:])
    assert [b.use_residual for b in blocks[:3]] == [False, False, True]  # 32→16, stride 2, then 24→24
    for b in blocks:
        assert b.dw_conv.groups == b.dw_conv.in_channels == b.dw_conv.out_channels  # depthwise
    assert isinstance(blocks[1].expand_act, nn.ReLU6) and not hasattr(blocks[1], "project_act")  # linear bottleneck
    half = MobileNetV2Small(dims=1, input_size=40, width_mult=0.5)
    assert _n_params(half) < 0.5 * _n_params(MobileNetV2Small(dims=1, input_size=40))


def test_resnet_shortcuts():
    model = ResNetSmall(dims=1, input_size=40)
    assert not model.layer1[0].has_shortcut_conv and not model.layer2[1].has_shortcut_conv
    assert model.layer2[0].has_shortcut_conv and model.layer2[0].shortcut_conv.stride == (2,)
    with pytest.raises(ModelLoadError, match="three stages"):
        ResNetSmall(widths=(8, 16))
    with pytest.raises(UnsupportedError, match="dims must be 1"):
        ResNetSmall(dims=3)


# --- pretrained weights ------------------------------------------------------------------------------------

@pytest.fixture
def quick_digits(monkeypatch):
    """digits_cnn with 3 epochs of training instead of its full schedule."""
    info = dataclasses.replace(REFERENCE_MODELS["digits_cnn"], epochs=3)
    monkeypatch.setattr(pretrained_module, "model_info", lambda name: info)
    return info


def _refuse_training(*args, **kwargs):
    raise AssertionError("should have loaded the cached weights instead of training")


def test_pretrained_trains_once_then_loads_from_the_cache(quick_digits, tmp_path, monkeypatch):
    assert pretrained_accuracy("digits_cnn") is None
    model = pretrained("digits_cnn")
    assert not model.training
    files = list((tmp_path / "cache" / "models").glob("digits_cnn-*.safetensors"))
    assert len(files) == 1 and re.fullmatch(r"digits_cnn-[0-9a-f]{12}\.safetensors", files[0].name)
    from safetensors import safe_open

    with safe_open(str(files[0]), framework="pt") as f:
        meta = f.metadata()
    assert meta["dataset"] == "builtin:digits" and meta["epochs"] == "3"
    accuracy = pretrained_accuracy("digits_cnn")
    assert accuracy == pytest.approx(float(meta["test_accuracy"])) and accuracy >= 0.7  # 3 epochs: measured 0.9+

    monkeypatch.setattr(pretrained_module, "fit", _refuse_training)
    again = pretrained("digits_cnn")
    for (k, v), w in zip(model.state_dict().items(), again.state_dict().values(), strict=True):
        torch.testing.assert_close(w, v, rtol=0, atol=0, msg=k)


def test_training_is_repeatable(quick_digits, tmp_path, monkeypatch):
    first = pretrained("digits_cnn")
    monkeypatch.setenv("EDGECOMPRESS_CACHE", str(tmp_path / "other"))
    second = pretrained("digits_cnn")
    for (k, v), w in zip(first.state_dict().items(), second.state_dict().values(), strict=True):
        torch.testing.assert_close(w, v, rtol=0, atol=0, msg=k)


@pytest.mark.parametrize("damage", [b"", b"\x08\x00\x00\x00\x00\x00\x00\x00{garbage", "truncate", "wrong-shapes",
                                    "nan"])
def test_damaged_weights_are_not_loaded(tmp_path, damage):
    from safetensors.torch import save_file

    source = build_model("digits_cnn")
    path = tmp_path / "w.safetensors"
    save_file(source.state_dict(), str(path))
    assert pretrained_module._load(build_model("digits_cnn"), path)
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:1000])
    elif damage == "wrong-shapes":
        save_file({k: torch.zeros(1) for k in source.state_dict()}, str(path))
    elif damage == "nan":
        save_file({k: v.float() * float("nan") for k, v in source.state_dict().items()}, str(path))
    else:
        path.write_bytes(damage)
    assert not pretrained_module._load(build_model("digits_cnn"), path)


def test_a_damaged_cache_file_is_retrained(quick_digits):
    model = pretrained("digits_cnn")
    path = weights_path("digits_cnn", model)
    path.write_bytes(path.read_bytes()[:1000])
    retrained = pretrained("digits_cnn")
    for (k, v), w in zip(model.state_dict().items(), retrained.state_dict().values(), strict=True):
        torch.testing.assert_close(w, v, rtol=0, atol=0, msg=k)  # seeded: the same weights as before
    assert pretrained_accuracy("digits_cnn") is not None


def test_the_cache_key_covers_settings_and_shapes(quick_digits, monkeypatch):
    model = build_model("digits_cnn")
    base = weights_path("digits_cnn", model)
    other = dataclasses.replace(quick_digits, lr=quick_digits.lr / 2)
    monkeypatch.setattr(pretrained_module, "model_info", lambda name: other)
    assert weights_path("digits_cnn", model) != base
    monkeypatch.setattr(pretrained_module, "model_info", lambda name: quick_digits)
    assert weights_path("digits_cnn", build_model("digits_cnn", num_classes=5)) != base
    assert weights_path("digits_cnn", build_model("digits_cnn")) == base


@pytest.mark.slow
def test_mnist1d_cnn_trains_to_the_papers_accuracy(tmp_path):
    from edgecompress.datasets import load_dataset
    from edgecompress.training import evaluate_accuracy

    started = time.perf_counter()
    model = pretrained("mnist1d_cnn")
    seconds = time.perf_counter() - started
    data = load_dataset("builtin:mnist1d")
    accuracy = evaluate_accuracy(model, data.x_test, data.y_test)
    assert accuracy >= 0.92, f"test accuracy {accuracy:.4f} after {seconds:.0f} s"  # paper: 94 %
    assert pretrained_accuracy("mnist1d_cnn") == pytest.approx(accuracy, abs=1e-6)
