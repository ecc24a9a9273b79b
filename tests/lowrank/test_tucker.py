"""L2: Tucker-2 and CP of k×k convolutions (1×1 → core → 1×1) via tensorly: lossless Tucker at full ranks, rank
rules per mode, CP fidelity growing with rank, and a real trained ResNet at half its parameters through ONNX."""

import pytest
import torch
from torch import nn

pytest.importorskip("tensorly", reason="Tucker and CP need tensorly: pip install 'tensorly>=0.9'")

from edgecompress.lowrank import FactorizeConfig, factorize, select_rank  # noqa: E402
from edgecompress.lowrank.cp import cp_module  # noqa: E402
from edgecompress.lowrank.rank import consistent_ranks, tucker_full_ranks  # noqa: E402
from edgecompress.lowrank.tucker import tucker_module, tucker_params  # noqa: E402
from edgecompress.testing import TinyConv1d, TinyResidual2d, sqnr  # noqa: E402


def _params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


CONVS = [  # (layer factory, input shape)
    (lambda: nn.Conv1d(8, 12, 3, stride=2, padding=1), (2, 8, 33)),
    (lambda: nn.Conv1d(6, 16, 5, dilation=2, padding="same", bias=False), (2, 6, 20)),
    (lambda: nn.Conv2d(8, 12, 3, padding=1), (2, 8, 9, 9)),
    (lambda: nn.Conv2d(4, 10, (3, 5), stride=(2, 1), padding=(1, 2), dilation=(1, 2)), (2, 4, 11, 13)),
    (lambda: nn.Conv2d(6, 6, 3, padding=1, padding_mode="reflect"), (2, 6, 8, 8)),
]
CONV_IDS = ["conv1d-stride", "conv1d-same-dilated-nobias", "conv2d-3x3", "conv2d-3x5-stride-dilation", "reflect"]


# --- Tucker-2 ----------------------------------------------------------------------------------------------------

def _seeded(make, shape):
    torch.manual_seed(0)
    return make(), torch.randn(shape)


@pytest.mark.parametrize("make, shape", CONVS, ids=CONV_IDS)
def test_full_rank_tucker_is_lossless(make, shape):
    layer, x = _seeded(make, shape)
    r_in, r_out = tucker_full_ranks(layer.weight)
    replacement, approx = tucker_module(layer, r_in, r_out)
    first, core, last = replacement
    assert (first.out_channels, core.out_channels) == (r_in, r_out)
    assert (core.stride, core.padding, core.dilation) == (layer.stride, layer.padding, layer.dilation)
    assert first.bias is None and core.bias is None and (last.bias is None) == (layer.bias is None)
    with torch.no_grad():
        torch.testing.assert_close(replacement(x), layer(x), rtol=1e-5, atol=1e-5)  # measured: max |diff| ≤ 6.0e-7
    torch.testing.assert_close(approx.float(), layer.weight.detach(), rtol=1e-5, atol=1e-6)


def test_tucker_energy_one_is_full_and_lower_energy_gives_smaller_ranks():
    torch.manual_seed(0)
    layer = nn.Conv2d(24, 32, 3)
    full = tucker_full_ranks(layer.weight)
    assert full == (24, 32) and select_rank("tucker", layer, FactorizeConfig(energy=1.0)) == full
    ranks = [select_rank("tucker", layer, FactorizeConfig(energy=e)) for e in (0.99, 0.9, 0.7, 0.4)]
    for higher, lower in zip(ranks, ranks[1:], strict=False):
        assert lower[0] <= higher[0] and lower[1] <= higher[1] and lower != higher
    assert select_rank("tucker", layer, FactorizeConfig(rank_ratio=0.5)) == (12, 16)
    assert select_rank("tucker", layer, FactorizeConfig(rank_ratio=0.01, min_rank=3)) == (3, 3)


def test_tucker_ranks_stay_consistent_and_within_budget():
    # a conv from 2 channels carries at most 2·9 = 18 output-mode ranks, and its input mode at most 2
    layer = nn.Conv2d(2, 64, 3)
    assert tucker_full_ranks(layer.weight) == (2, 18)
    assert consistent_ranks(64, 2, 9) == (18, 2)
    for ratio in (0.3, 0.5, 0.8):
        big = nn.Conv1d(32, 48, 3)
        r_in, r_out = select_rank("tucker", big, FactorizeConfig(param_ratio=ratio))
        assert tucker_params(48, 32, 3, r_in, r_out, True) <= ratio * _params(big)
        # one more step up in both ranks would not fit
        assert tucker_params(48, 32, 3, r_in + 1, r_out + 1, True) > ratio * _params(big)


def test_truncated_tucker_error_falls_with_rank():
    torch.manual_seed(0)
    layer, x = nn.Conv2d(16, 16, 3, padding=1), torch.randn(4, 16, 8, 8)
    with torch.no_grad():
        ref = layer(x)
        figures = [sqnr(ref, tucker_module(layer, r, r)[0](x)) for r in (2, 6, 12, 16)]
    # measured: 0.5, 1.6, 5.8, 130.0 dB (random weights: a flat spectrum in both modes)
    assert figures == sorted(figures) and figures[-1] > 100


# --- CP ----------------------------------------------------------------------------------------------------------

def test_cp_conv2d_is_the_four_conv_chain_and_conv1d_three():
    torch.manual_seed(0)
    conv2d = nn.Conv2d(8, 12, (3, 5), stride=(2, 1), padding=(1, 2))
    chain, _ = cp_module(conv2d, 6)
    assert [type(m) for m in chain] == [nn.Conv2d] * 4
    first, along_h, along_w, last = chain
    assert (first.kernel_size, along_h.kernel_size, along_w.kernel_size, last.kernel_size) == \
        ((1, 1), (3, 1), (1, 5), (1, 1))
    assert along_h.groups == along_w.groups == 6 and along_h.stride == (2, 1) and along_w.padding == (0, 2)
    assert _params(chain) == 6 * (8 + 12 + 3 + 5) + 12
    x = torch.randn(2, 8, 9, 10)
    with torch.no_grad():
        assert chain(x).shape == conv2d(x).shape
    conv1d = nn.Conv1d(8, 12, 3, stride=2, padding=1)
    chain1d, _ = cp_module(conv1d, 6)
    assert [m.kernel_size for m in chain1d] == [(1,), (3,), (1,)] and chain1d[1].groups == 6


@pytest.mark.parametrize("make, shape", [CONVS[0], CONVS[2], CONVS[3]], ids=[CONV_IDS[0], CONV_IDS[2], CONV_IDS[3]])
def test_cp_fidelity_improves_with_rank(make, shape):
    layer, x = _seeded(make, shape)
    with torch.no_grad():
        ref = layer(x)
        figures = [sqnr(ref, cp_module(layer, rank)[0](x)) for rank in (2, 8, 32)]
    # measured (conv1d, 3×3, 3×5): [1.2, 7.3, 110.6], [0.5, 1.9, 18.3], [0.7, 2.5, 24.7] dB. Rank 32 exceeds what
    # the 12×8×3 tensor holds (at most 24): exact, and ALS needs its ridge retry there
    assert figures == sorted(figures) and figures[-1] - figures[0] > 5


def test_cp_recovers_an_exact_low_cp_rank_kernel():
    # a weight that IS a rank-3 CP: ALS finds it back up to float32 rounding
    torch.manual_seed(0)
    layer = nn.Conv2d(10, 14, 3, padding=1)
    with torch.no_grad():
        a, b, c, d = torch.randn(14, 3), torch.randn(10, 3), torch.randn(3, 3), torch.randn(3, 3)
        layer.weight.copy_(torch.einsum("or,ir,hr,wr->oihw", a, b, c, d) / 4)
    x = torch.randn(2, 10, 6, 6)
    result = factorize(layer, FactorizeConfig(method="cp", rank_ratio=3 / 14))
    assert result.layers[""].rank == 3 and result.layers[""].energy_kept > 1 - 1e-8
    with torch.no_grad():
        torch.testing.assert_close(result.model(x), layer(x), rtol=1e-4, atol=1e-4)  # measured: max |diff| 3.8e-6


# --- factorize on tiny models ------------------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["tucker", "cp"])
@pytest.mark.parametrize("model_class", [TinyConv1d, TinyResidual2d])
def test_factorize_tiny_models(model_class, method):
    torch.manual_seed(0)
    model = model_class().eval()
    (x,) = model.example_inputs(4)
    result = factorize(model, FactorizeConfig(method=method, param_ratio=0.6))
    assert result.layers, result.skipped
    for name, info in result.layers.items():
        assert info.method == method and info.params_after <= 0.6 * info.params_before
        assert _params(result.model.get_submodule(name)) == info.params_after
    if model_class is TinyConv1d:
        assert "conv1" in result.skipped  # a conv from 1 channel does not get small enough
    assert "fc" in result.skipped  # Linear: not covered by tucker / cp
    assert result.params_after == _params(result.model) < result.params_before
    with torch.no_grad():
        assert result.model(x).shape == model(x).shape


# --- a real trained model ----------------------------------------------------------------------------------------

def test_resnet_mnist1d_tucker_at_half_parameters_exports_with_onnx_parity(tmp_path):
    from edgecompress.datasets import load_dataset
    from edgecompress.export import get_exporter
    from edgecompress.model_io import load_model
    from edgecompress.training import evaluate_accuracy

    loaded = load_model("builtin:resnet_mnist1d")
    data = load_dataset(loaded.dataset)
    model = loaded.model.eval()
    # The stem conv (1 → 32 channels, 96 parameters) is left out: at half its parameters Tucker squeezes it through
    # one channel (energy kept 0.43) and accuracy before fine-tuning falls to 0.329 (measured) instead of 0.989.
    result = factorize(model, FactorizeConfig(method="tucker", param_ratio=0.5, ignore=("conv1",)))
    factorized = result.model.eval()
    fall = 1 - result.params_after / result.params_before
    before, after = evaluate_accuracy(model, data.x_test, data.y_test), \
        evaluate_accuracy(factorized, data.x_test, data.y_test)
    energies = [info.energy_kept for info in result.layers.values()]
    print(f"\nresnet_mnist1d tucker param_ratio=0.5: params {result.params_before} → {result.params_after} "
          f"(−{fall:.1%}), {len(result.layers)} convs, energy kept {min(energies):.3f}–{max(energies):.3f}, "
          f"accuracy {before:.4f} → {after:.4f} before fine-tuning")
    assert fall >= 0.40  # measured: −47.9 % (241,194 → 125,681 parameters)
    assert after > before - 0.02  # measured: 0.991 → 0.989, before any fine-tuning
    exporter = get_exporter("onnx")
    batch = data.x_test[:8]
    artifact = exporter.export(factorized, loaded.example_inputs, tmp_path / "tucker.onnx", scheme="fp32")
    got = torch.from_numpy(exporter.runner(artifact.path, threads=1)(batch.numpy()))
    with torch.no_grad():
        expected = factorized(batch)
    print(f"ONNX Runtime vs torch: max |diff| {(got - expected).abs().max().item():.2e}")
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)  # measured: max |diff| 4.8e-6
