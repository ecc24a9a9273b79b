"""Quantization-aware training (Q6) and binary / ternary weights trained with it (Q7)."""

import copy

import numpy as np
import pytest
import torch

from edgecompress.datasets import Dataset
from edgecompress.errors import DataError, RecipeError
from edgecompress.quantization import ActivationQuantizer, QuantConfig, QuantizedLayer, ops, quantize
from edgecompress.quantization.lsq import LsqQuantizer, fake_quantize_ste, grad_scale, round_ste
from edgecompress.quantization.qat import QATConfig, QATLayer, QuantizationAwareTraining
from edgecompress.testing.numeric import sqnr
from edgecompress.testing.tiny_models import TinyConv1d, TinyMLP, TinyResidual2d
from edgecompress.training import evaluate_accuracy, fit, predict


def _with_bn_statistics(model):
    """Random running statistics, so that folding batch norm is not the identity."""
    for bn in model.modules():
        if isinstance(bn, torch.nn.modules.batchnorm._BatchNorm):
            with torch.no_grad():
                bn.running_mean.uniform_(-0.5, 0.5)
                bn.running_var.uniform_(0.5, 2.0)
                bn.weight.uniform_(0.5, 1.5)
                bn.bias.uniform_(-0.2, 0.2)
    return model


def _tiny(cls, seed=0):
    torch.manual_seed(seed)
    return _with_bn_statistics(cls().eval())


def _task(model, n=256, seed=0):
    """A learnable labelling of random inputs: the argmax of a fixed random linear map."""
    g = torch.Generator().manual_seed(seed)
    shape = model.example_inputs()[0].shape[1:]
    x = torch.randn((n, *shape), generator=g)
    w = torch.randn(x[0].numel(), 4, generator=g)
    y = (x.flatten(1) @ w).argmax(1)
    cut = n * 3 // 4
    return Dataset("synthetic", x[:cut], y[:cut], x[cut:], y[cut:], 4)


# --- configuration ------------------------------------------------------------------------------------------

def test_config_defaults_and_bits_per_format():
    assert QATConfig().bits == 8
    assert QATConfig(weight_format="binary").bits == 1
    assert QATConfig(weight_format="ternary", bits=2).bits == 2
    assert QATConfig(bits=4).quant_config().weight_bits == 4
    assert QATConfig(weight_format="ternary").quant_config().ternary


@pytest.mark.parametrize("kwargs,match", [
    (dict(weight_format="int1"), "weight_format 'int1' is not allowed"),
    (dict(bits=5), "bits 5 is not allowed"),
    (dict(bits=1), "weight_format='binary'"),
    (dict(weight_format="binary", bits=8), "binary weights are 1-bit"),
    (dict(activation_bits=4), "activation_bits 4"),
    (dict(epochs=-1), "epochs must be"),
    (dict(learning_rate=0.0), "learning_rate"),
    (dict(epochs=2, freeze_bn_after=3), "freeze_bn_after"),
    (dict(bits=4, reduce_range=True), "reduce_range"),
    (dict(ignore=("re:(",)), "not a valid regular expression"),
])
def test_config_rejects_bad_values(kwargs, match):
    with pytest.raises(RecipeError, match=match):
        QATConfig(**kwargs)


def test_refuses_without_calibration_data():
    with pytest.raises(DataError, match="calibration"):
        QuantizationAwareTraining(_tiny(TinyMLP), QATConfig(), calibration=None)


def test_part_way_bn_freezing_needs_steps_per_epoch():
    model = _tiny(TinyConv1d)
    with pytest.raises(RecipeError, match="steps_per_epoch"):
        QuantizationAwareTraining(model, QATConfig(epochs=3, freeze_bn_after=1), calibration=torch.randn(8, 1, 16))


# --- the differentiable fake quantization ---------------------------------------------------------------------

def test_ste_forward_equals_the_custom_op_and_gradients_follow_lsq():
    torch.manual_seed(0)
    x = (torch.randn(1000) * 3).requires_grad_()
    scale = torch.tensor(0.05, requires_grad=True)
    zp = torch.tensor(10.0)
    out = fake_quantize_ste(x, scale, zp, 0, 255)
    torch.testing.assert_close(out, ops.fake_quantize(x.detach(), scale.detach(), zp.to(torch.uint8), 0, 255),
                               rtol=0, atol=0)
    out.sum().backward()
    v = x.detach() / 0.05
    inside = (torch.round(v) + 10 >= 0) & (torch.round(v) + 10 <= 255)
    torch.testing.assert_close(x.grad, inside.float())  # STE: 1 inside the range, 0 where clamped
    # LSQ: ∂x̂/∂s = round(v) − v inside, qmin − z below, qmax − z above (Esser et al. 2020, eq. 3)
    expected = torch.where(inside, torch.round(v) - v, torch.where(v < 0, torch.tensor(-10.0), torch.tensor(245.0)))
    torch.testing.assert_close(scale.grad, expected.sum(), rtol=1e-4, atol=1e-3)


def test_binary_ste_gives_sign_codes_and_passes_gradient_inside_the_window():
    w = torch.tensor([-2.0, -0.3, 0.0, 0.2, 1.5], requires_grad=True)
    out = fake_quantize_ste(w, torch.tensor(0.5), 0.0, -1, 1, binary=True)
    assert out.tolist() == [-0.5, -0.5, 0.5, 0.5, 0.5]
    out.sum().backward()
    assert w.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 0.0]  # hardtanh window |w/s| <= 1


def test_straight_through_helpers_are_exact_in_the_forward_pass():
    x = torch.randn(10000) * 100
    assert torch.equal(round_ste(x), torch.round(x))
    assert torch.equal(grad_scale(x, 0.01), x)
    q = LsqQuantizer(torch.tensor(0.0377), torch.tensor(145), 0, 255)
    assert q.scale().item() == torch.tensor(0.0377).item()  # exactly the initial value before training


# --- the lifecycle on tiny models -----------------------------------------------------------------------------

@pytest.mark.parametrize("cls", [TinyConv1d, TinyResidual2d, TinyMLP])
@pytest.mark.parametrize("qat_kwargs,ptq_kwargs", [
    (dict(bits=8), dict()),
    (dict(bits=4), dict(weight_bits=4)),
    (dict(weight_format="ternary"), dict(weight_bits=2, ternary=True)),
    (dict(weight_format="binary", per_channel=False), dict(weight_bits=1, per_channel=False)),
])
def test_training_starts_exactly_from_the_post_training_model(cls, qat_kwargs, ptq_kwargs):
    model = _tiny(cls)
    x = torch.cat([model.example_inputs(batch_size=32)[0] for _ in range(2)])
    ptq = quantize(model, QuantConfig(**ptq_kwargs), calibration=x)
    qat = QuantizationAwareTraining(model, QATConfig(**qat_kwargs), calibration=x)
    assert any(isinstance(m, QATLayer) for m in qat.model.modules())
    assert not any(isinstance(m, (QuantizedLayer, ActivationQuantizer)) for m in qat.model.modules())
    assert torch.equal(predict(ptq, x), predict(qat.model, x))  # same integers, scales, biases, BN folding


@pytest.mark.parametrize("qat_kwargs,levels", [
    (dict(bits=4), set(range(-8, 8))),
    (dict(bits=4, per_channel=False), set(range(-8, 8))),
    (dict(weight_format="ternary"), {-1, 0, 1}),
    (dict(weight_format="binary"), {-1, 1}),
])
def test_finalized_model_is_the_trained_model_in_the_converted_representation(qat_kwargs, levels):
    model = _tiny(TinyConv1d)
    before = copy.deepcopy(model.state_dict())
    data = _task(model)
    qat = QuantizationAwareTraining(model, QATConfig(**qat_kwargs, epochs=3), calibration=data.x_train)
    initial = {n: m.scale().detach().clone() for n, m in qat.model.named_modules() if isinstance(m, LsqQuantizer)}
    fit(qat.model, data, epochs=3, lr=3e-3, batch_size=32, on_step=qat.step)
    assert qat.steps == 3 * 6
    learned = {n: m.scale().detach().clone() for n, m in qat.model.named_modules() if isinstance(m, LsqQuantizer)}
    assert all(not torch.equal(initial[n], learned[n]) for n in initial)  # every step size was trained
    trained = {n: m.folded()[0].detach().clone() for n, m in qat.model.named_modules() if isinstance(m, QATLayer)}
    simulated = predict(qat.model, data.x_test)
    final = qat.finalize()
    assert torch.equal(predict(final, data.x_test), simulated)  # training simulated the deployed arithmetic
    for name, module in final.named_modules():
        if isinstance(module, QuantizedLayer):
            assert module.converted and module.weight_int.dtype == torch.int8
            assert set(module.weight_int.unique().tolist()) <= levels
            scale = learned[f"{name}.weight_quantizer"]
            torch.testing.assert_close(module.weight_scale, scale.expand_as(module.weight_scale), rtol=0, atol=0)
            w = trained[name]
            codes = torch.clamp(torch.round(w / scale.reshape([-1] + [1] * (w.dim() - 1))), min(levels), max(levels))
            if levels == {-1, 1}:
                codes = torch.where(w >= 0, 1.0, -1.0)
            assert torch.equal(module.weight_int.float(), codes)  # round(clamp(w / s)) with the learned s
        elif isinstance(module, ActivationQuantizer):
            assert module.frozen and module.scale.item() == learned[name].item()
    for k, v in model.state_dict().items():  # the input model is never modified
        torch.testing.assert_close(v, before[k])
    with pytest.raises(RecipeError, match="already finalized"):
        qat.step()


def test_ignored_layers_stay_float_and_train():
    model = _tiny(TinyMLP)
    data = _task(model)
    qat = QuantizationAwareTraining(model, QATConfig(bits=4, ignore=("fc2",)), calibration=data.x_train)
    assert type(qat.model.fc2) is torch.nn.Linear
    weight = qat.model.fc2.weight.detach().clone()
    fit(qat.model, data, epochs=1, lr=3e-3, batch_size=32, on_step=qat.step)
    assert not torch.equal(qat.model.fc2.weight, weight)
    final = qat.finalize()
    assert type(final.fc2) is torch.nn.Linear and isinstance(final.fc1, QuantizedLayer)


def test_fixed_scales_train_weights_only():
    model = _tiny(TinyMLP)
    data = _task(model)
    qat = QuantizationAwareTraining(model, QATConfig(bits=4, learn_scales=False), calibration=data.x_train)
    scales = {n: m.scale().clone() for n, m in qat.model.named_modules() if isinstance(m, LsqQuantizer)}
    weight = qat.model.fc1.weight.detach().clone()
    fit(qat.model, data, epochs=2, lr=3e-3, batch_size=32, on_step=qat.step)
    assert all(torch.equal(m.scale(), scales[n]) for n, m in qat.model.named_modules() if isinstance(m, LsqQuantizer))
    assert not torch.equal(qat.model.fc1.weight, weight)


def test_qat_improves_a_tiny_binary_model():
    model = _tiny(TinyMLP)
    data = _task(model, n=1024)
    fit(model, data, epochs=20, lr=1e-2, batch_size=64)
    float_acc = evaluate_accuracy(model, data.x_test, data.y_test)
    ptq = quantize(model, QuantConfig(weight_bits=1), calibration=data.x_train)
    ptq_acc = evaluate_accuracy(ptq, data.x_test, data.y_test)
    qat = QuantizationAwareTraining(model, QATConfig(weight_format="binary"), calibration=data.x_train)
    fit(qat.model, data, epochs=5, lr=3e-3, batch_size=64, on_step=qat.step)
    qat_acc = evaluate_accuracy(qat.finalize(), data.x_test, data.y_test)
    # measured (256 test samples): float 0.949, binary PTQ 0.723, binary QAT 0.852
    assert float_acc > 0.9 and qat_acc > ptq_acc + 0.06


# --- batch norm -----------------------------------------------------------------------------------------------

def test_kept_batch_norm_normalises_with_batch_statistics_then_freezes():
    model = _tiny(TinyConv1d)
    x = torch.randn(64, 1, 16)
    for bn in (model.bn1, model.bn2):  # running statistics of this data, as after training
        bn.reset_running_stats()
        bn.momentum = None
    with torch.no_grad():
        model.train()(x)
    model.eval()
    qat = QuantizationAwareTraining(model, QATConfig(bits=8, epochs=2, freeze_bn_after=1), calibration=x,
                                    steps_per_epoch=4)
    layer = qat.model.conv1
    assert layer.bn is not None and not layer.bn_frozen
    float_train = copy.deepcopy(model).train()
    qat.model.train()
    with torch.no_grad():
        value = sqnr(float_train(x), qat.model(x))
    assert value > 28.0  # batch statistics as in float training, through 8-bit fake quantization; measured 35.7 dB
    assert not torch.equal(layer.bn.running_mean, model.bn1.running_mean)  # statistics were updated
    for _ in range(4):
        qat.step()
    assert layer.bn_frozen and qat.model.conv2.bn_frozen
    stats = layer.bn.running_mean.clone()
    with torch.no_grad():
        train_out = qat.model(x)
        qat.model.eval()
        assert torch.equal(train_out, qat.model(x))  # frozen: training computes the folded, deployed layer
    assert torch.equal(layer.bn.running_mean, stats)


def test_gamma_zero_channel_stays_finite_with_batch_statistics():
    model = _tiny(TinyConv1d)
    with torch.no_grad():
        model.bn1.weight[0] = 0.0
    x = torch.randn(32, 1, 16)
    qat = QuantizationAwareTraining(model, QATConfig(epochs=1, freeze_bn_after=1), calibration=x)
    qat.model.train()
    out = qat.model(x)
    assert torch.isfinite(out).all()


# --- export parity --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("qat_kwargs,scheme", [
    (dict(bits=4), "int4"),
    (dict(weight_format="binary"), "binary"),
    (dict(weight_format="ternary"), "ternary"),  # INT2 weights widened to INT4 where ORT fuses QLinearConv
    (dict(bits=8, reduce_range=True), "int8"),
])
def test_finalized_model_exports_to_onnx_with_parity(tmp_path, qat_kwargs, scheme):
    from edgecompress.export import get_exporter

    model = _tiny(TinyResidual2d)
    data = _task(model)
    qat = QuantizationAwareTraining(model, QATConfig(**qat_kwargs), calibration=data.x_train)
    fit(qat.model, data, epochs=1, lr=3e-3, batch_size=32, on_step=qat.step)
    final = qat.finalize()
    exporter = get_exporter("onnx")
    artifact = exporter.export(final, model.example_inputs(), tmp_path / "qat.onnx", scheme=scheme)
    out = exporter.runner(artifact.path, threads=1)(data.x_test.numpy())
    ref = predict(final, data.x_test).numpy()
    # the runtime convolves in another order (low bits: in float on dequantized weights; int8: in integer
    # kernels), so a value near a rounding boundary may land one output step away; measured 50.6 dB (int4),
    # 50.1 dB (binary), 53.5 dB (int8), every top-1 equal, largest difference one step
    assert sqnr(ref, out) > 40.0 and (out.argmax(-1) == ref.argmax(-1)).mean() >= 0.95
    step = final.get_submodule("fc_quant").scale.item()
    assert np.abs(out - ref).max() <= 1.01 * step


# --- the trained reference model (Q6 / Q7 evidence) -----------------------------------------------------------

@pytest.fixture(scope="module")
def mnist1d():
    from edgecompress.datasets import load_dataset
    from edgecompress.model_io import load_model

    loaded = load_model("builtin:mnist1d_cnn")
    return loaded.model, load_dataset(loaded.dataset)


def _qat_accuracy(model, data, config):
    qat = QuantizationAwareTraining(model, config, calibration=data.x_train[:512])
    fit(qat.model, data, epochs=config.epochs, lr=config.learning_rate, on_step=qat.step)
    return evaluate_accuracy(qat.finalize(), data.x_test, data.y_test)


def test_mnist1d_4bit_qat_recovers_most_of_what_ptq_loses(mnist1d):
    model, data = mnist1d
    float_acc = evaluate_accuracy(model, data.x_test, data.y_test)
    ptq = quantize(model, QuantConfig(weight_bits=4), calibration=data.x_train[:512])
    ptq_acc = evaluate_accuracy(ptq, data.x_test, data.y_test)
    qat_acc = _qat_accuracy(model, data, QATConfig(bits=4, epochs=5, learning_rate=1e-3))
    # measured: float 0.948, 4-bit weights + 8-bit activations: PTQ 0.931, QAT (5 epochs) 0.948
    assert ptq_acc < float_acc
    assert qat_acc - ptq_acc >= 0.5 * (float_acc - ptq_acc)


@pytest.mark.parametrize("fmt,ptq_config", [
    ("ternary", QuantConfig(weight_bits=2, ternary=True)),
    ("binary", QuantConfig(weight_bits=1)),
])
def test_mnist1d_binary_and_ternary_qat_beat_ptq(mnist1d, fmt, ptq_config):
    model, data = mnist1d
    ptq_acc = evaluate_accuracy(quantize(model, ptq_config, calibration=data.x_train[:512]), data.x_test, data.y_test)
    qat_acc = _qat_accuracy(model, data, QATConfig(weight_format=fmt, epochs=5, learning_rate=3e-3))
    # measured (5 epochs, every layer binary/ternary): ternary PTQ 0.395 → QAT 0.827; binary 0.199 → 0.632
    assert qat_acc > ptq_acc + 0.2
