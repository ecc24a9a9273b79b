"""Structured pruning with physical removal, on the architecture suite and the reference models: at ratio 0.5 every
model still runs with its output shape, exports to ONNX with runtime parity, computes exactly what the original
computes with the removed channels zeroed, and its MACs fall as its kept channels say they must."""

from __future__ import annotations

import copy
import math
from functools import cache

import pytest
import torch
from architectures import FAMILIES, build_family
from torch import nn

from edgecompress.errors import DataError, RecipeError
from edgecompress.measure import count_macs, count_params
from edgecompress.models import REFERENCE_MODELS, build_model
from edgecompress.pruning.structured import apply_plan, mask_structured, plan_structured, prune_structured
from edgecompress.pruning.structured_config import StructuredPruneConfig

MODELS = [*FAMILIES, *REFERENCE_MODELS]
# LayerNorm averages over the channels, so zeroing a channel of the residual stream is not removing it: the exactness
# check keeps LayerNorm-coupled groups whole there (attention heads and MLP hidden units are still cut).
LAYERNORM_STREAMS = {"vit_encoder", "transformer_mnist1d"}
# ONNX export takes 2–9 s a model: a few representative ones run by default, the rest with the slow suite.
FAST_EXPORT = {"vit_encoder"}


def _randomize_norms(model: nn.Module, seed: int = 0) -> nn.Module:
    """Batch norms with non-trivial statistics and affine parameters, so that a channel whose conv filter is zero
    still outputs beta − mean·gamma/σ ≠ 0 unless the norm is zeroed too (untrained models would hide that)."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.5)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.randn(m.num_features, generator=g))
            m.bias.data.copy_(torch.randn(m.num_features, generator=g))
    return model


@cache
def _model(name: str) -> nn.Module:
    torch.manual_seed(0)
    model = build_family(name) if name in FAMILIES else build_model(name).eval()
    return _randomize_norms(model)


def _inputs(name: str) -> tuple[torch.Tensor, ...]:
    torch.manual_seed(1)
    return _model(name).example_inputs(2)


@cache
def _pruned(name: str):
    return prune_structured(_model(name), StructuredPruneConfig(ratio=0.5), example_inputs=_inputs(name))


def _weights(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {n: tuple(p.shape) for n, p in model.named_parameters()}


# --- the architecture suite ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", MODELS)
def test_pruned_model_is_smaller_runs_and_keeps_its_output_shape(name):
    model, x = _model(name), _inputs(name)
    result = _pruned(name)
    with torch.no_grad():
        assert result.model(*x).shape == model(*x).shape
    assert result.params_after < 0.75 * result.params_before  # every family loses at least a quarter of its weights
    assert result.params_before == count_params(model) and result.params_after == count_params(result.model)
    assert any(removed for removed, _ in result.removed.values())
    for layer in result.plan.protected:  # the classifier keeps its outputs
        assert result.removed[layer][0] == 0


@pytest.mark.parametrize("name", MODELS)
def test_pruned_model_computes_what_the_zeroed_original_computes(name):
    model, x = _model(name), _inputs(name)
    config = StructuredPruneConfig(ratio=0.5, ignore=("re:.*norm.*",) if name in LAYERNORM_STREAMS else ())
    plan = plan_structured(model, config, example_inputs=x)
    assert plan.cuts
    pruned, zeroed = apply_plan(model, plan, example_inputs=x), mask_structured(model, plan, example_inputs=x)
    with torch.no_grad():
        out, reference, original = pruned(*x), zeroed(*x), model(*x)
    assert (original - reference).abs().max() > 1e-3  # the zeros matter: the check is not vacuous
    torch.testing.assert_close(out, reference, atol=1e-5, rtol=1e-5)  # measured: ≤ 2.4e-7 on every model


# MACs after / before at ratio 0.5 (layer scope). Each conv or linear keeps ceil(n/2) of its output and of its input
# channels, so its MACs fall to 0.25–0.27; the stem (input fixed) and the classifier (outputs fixed) to about 0.5:
# every model lands in [0.25, 0.55]. Measured: resnet_bottleneck 0.269, mobilenetv3_se 0.313, efficientnet_mbconv
# 0.308, densenet_concat 0.260, shufflenet_split 0.324, squeezenet_fire 0.363, vit_encoder 0.288, audio_conv1d 0.273,
# lstm_classifier 0.303, mnist1d_cnn 0.299, digits_cnn 0.254, mobilenetv2_mnist1d 0.257, mobilenetv2_digits 0.273,
# resnet_mnist1d 0.250, resnet_digits 0.252, transformer_mnist1d 0.261. The GRU keeps its hidden size (only its input
# projection shrinks), and flop_counter counts its gate matmuls: 0.675. flop_counter does not count the fused LSTM
# kernel at all, so lstm_classifier measures its conv front-end and head only.
MACS_RANGE = {"gru_classifier": (0.60, 0.75)}


@pytest.mark.parametrize("name", MODELS)
def test_macs_fall_as_the_kept_channels_say(name):
    model, x = _model(name), _inputs(name)
    result = _pruned(name)
    assert result.macs_before == count_macs(model, x) and result.macs_after == count_macs(result.model, x)
    low, high = MACS_RANGE.get(name, (0.25, 0.55))
    assert low <= result.macs_after / result.macs_before <= high
    if not any(isinstance(m, nn.RNNBase) for m in model.modules()):
        # Recount from the pruned layer shapes alone: the counter saw exactly the kept channels.
        assert result.macs_after == _macs_from_shapes(result.model, x)


def _macs_from_shapes(model: nn.Module, inputs: tuple[torch.Tensor, ...]) -> int:
    """Conv: output elements × input channels per group × kernel; Linear: output elements × inputs; hand-written
    attention: the q·kᵀ and weights·v products (B·T²·width each). nn.MultiheadAttention counts nothing: in eval it runs
    the fused torch._native_multi_head_attention, which flop_counter (and so measure.count_macs) does not see."""
    total = 0

    def hook(module, args, out):
        nonlocal total
        out = out[0] if isinstance(out, tuple) else out
        if isinstance(module, nn.modules.conv._ConvNd):
            total += out.numel() * module.in_channels // module.groups * math.prod(module.kernel_size)
        elif isinstance(module, nn.Linear):
            total += out.numel() * module.in_features
        elif hasattr(module, "heads") and hasattr(module, "qkv"):  # TinyTransformer's attention; its Linears hook too
            total += 2 * args[0].shape[0] * args[0].shape[1] ** 2 * module.proj.in_features

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    try:
        with torch.no_grad():
            model(*inputs)
    finally:
        for h in handles:
            h.remove()
    return total


@pytest.mark.parametrize("name", [pytest.param(n, marks=() if n in FAST_EXPORT else pytest.mark.slow) for n in MODELS])
def test_pruned_model_exports_to_onnx_with_runtime_parity(name, tmp_path):
    from edgecompress.export import get_exporter

    x = _inputs(name)
    pruned = _pruned(name).model
    exporter = get_exporter("onnx")
    artifact = exporter.export(pruned, x, tmp_path / "pruned.onnx", scheme="fp32")
    got = torch.from_numpy(exporter.runner(artifact.path, threads=1)(x[0].numpy()))
    with torch.no_grad():
        torch.testing.assert_close(got, pruned(*x), atol=1e-5, rtol=1e-4)  # measured: ≤ 4.2e-7


def test_plain_chain_where_both_sides_halve_costs_a_quarter():
    torch.manual_seed(0)
    chain = nn.Sequential(nn.Conv1d(4, 4, 3, padding=1), nn.Conv1d(4, 16, 3, padding=1), nn.ReLU(),
                          nn.Conv1d(16, 16, 3, padding=1), nn.ReLU(), nn.Conv1d(16, 4, 3, padding=1))
    x = torch.randn(1, 4, 32)
    result = prune_structured(chain, StructuredPruneConfig(ratio=0.5), example_inputs=(x,))
    # Conv 1 (4 → 4 channels, 3 taps, 32 steps) loses half its outputs, conv 2 half its inputs and outputs, conv 3
    # half of both, conv 4 (model output) half its inputs: MACs 32·3·(16/2 + 32/4 + 256/4 + 64/2).
    assert result.macs_before == 32 * 3 * (16 + 64 + 256 + 64)
    assert result.macs_after == 32 * 3 * (8 + 16 + 64 + 32)
    assert [m.out_channels for m in result.model if isinstance(m, nn.Conv1d)] == [2, 8, 8, 4]


# --- scope, ignore, floor, rounding, heads ----------------------------------------------------------------------

def _unequal_mlp() -> nn.Sequential:
    """Two hidden layers of 32: the first with every unit equally strong, the second with strengths spread over two
    orders of magnitude, so that a global ranking takes more from the second."""
    mlp = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 4))
    strength = torch.logspace(-1, 1, 32)
    with torch.no_grad():
        mlp[0].weight.fill_(0.1)
        mlp[2].weight.copy_(strength[:, None].expand(32, 32) * 0.1)
        mlp[4].weight.copy_(strength[None, :].expand(4, 32) * 0.1)
    return mlp


def test_global_and_layer_scope_give_different_per_layer_ratios():
    x = (torch.randn(2, 8),)
    layer = prune_structured(_unequal_mlp(), StructuredPruneConfig(ratio=0.5, scope="layer"), example_inputs=x)
    wide = prune_structured(_unequal_mlp(), StructuredPruneConfig(ratio=0.5, scope="global"), example_inputs=x)
    assert layer.removed["0"] == (16, 16) and layer.removed["2"] == (16, 16)
    assert wide.removed["0"][0] + wide.removed["2"][0] == 32  # the same budget overall …
    assert wide.removed["2"][0] > wide.removed["0"][0] + 4  # … spent mostly on the uneven layer (measured 21 vs 11)
    kept_strength = wide.model[2].weight.abs().sum(1)
    assert kept_strength.min() > _unequal_mlp()[2].weight.abs().sum(1).median()  # its weakest units went


@pytest.mark.parametrize("ignore", [("block1.conv.0", "block2.expand.0"), ("re:block1\\..*", "re:.*shortcut.*")])
def test_ignored_layers_stay_whole(ignore):
    model, x = _model("resnet_bottleneck"), _inputs("resnet_bottleneck")
    result = prune_structured(model, StructuredPruneConfig(ratio=0.5, ignore=ignore), example_inputs=x)
    from edgecompress.layers import matches

    ignored = [n for n in _weights(model) if any(matches(".".join(n.split(".")[:i]), ignore)
                                                  for i in range(1, n.count(".") + 1))]
    assert ignored
    before, after = _weights(model), _weights(result.model)
    assert all(after[n] == before[n] for n in ignored)
    assert after != before  # the rest is still pruned


@pytest.mark.parametrize("name", ["resnet_bottleneck", "shufflenet_split", "densenet_concat", "vit_encoder"])
@pytest.mark.parametrize("scope", ["layer", "global"])
def test_floor_holds_at_ratio_099(name, scope):
    model, x = _model(name), _inputs(name)
    result = prune_structured(model, StructuredPruneConfig(ratio=0.99, scope=scope, min_channels=4),
                              example_inputs=x)
    before = {n: m for n, m in model.named_modules()}
    for name_, module in result.model.named_modules():
        if isinstance(module, (nn.modules.conv._ConvNd, nn.Linear)):
            original = before[name_]
            out_before = getattr(original, "out_channels", None) or original.out_features
            out_after = getattr(module, "out_channels", None) or module.out_features
            assert out_after >= min(out_before, 4), name_
            assert (getattr(module, "in_channels", None) or module.in_features) >= 1
    with torch.no_grad():
        assert result.model(*x).shape == model(*x).shape


def test_kept_channels_are_rounded_to_a_multiple():
    model, x = _model("mobilenetv2_digits"), _inputs("mobilenetv2_digits")
    result = prune_structured(model, StructuredPruneConfig(ratio=0.3, round_to=8), example_inputs=x)
    changed = [kept for removed, kept in result.removed.values() if removed]
    assert changed and all(kept % 8 == 0 for kept in changed)


def test_attention_loses_whole_heads():
    vit, x = _model("vit_encoder"), _inputs("vit_encoder")
    result = prune_structured(vit, StructuredPruneConfig(ratio=0.5), example_inputs=x)
    for attn in (m for m in result.model.modules() if isinstance(m, nn.MultiheadAttention)):
        assert attn.num_heads == 2 and attn.head_dim == 8 and attn.embed_dim == 16  # 4 heads of 8 → 2 heads of 8

    tiny, y = _model("transformer_mnist1d"), _inputs("transformer_mnist1d")
    heads = prune_structured(tiny, StructuredPruneConfig(ratio=0.5), example_inputs=y).model
    dims = prune_structured(tiny, StructuredPruneConfig(ratio=0.5, prune_heads=False), example_inputs=y).model
    for block_heads, block_dims in zip(heads.blocks, dims.blocks, strict=True):
        assert (block_heads.attn.heads, block_heads.attn.head_dim) == (2, 16)  # 4 × 16 → 2 whole heads
        assert (block_dims.attn.heads, block_dims.attn.head_dim) == (4, 8)  # 4 × 16 → 4 heads of 8
        for attn in (block_heads.attn, block_dims.attn):
            assert attn.qkv.out_features == 3 * attn.heads * attn.head_dim == 3 * attn.proj.in_features


def test_head_dimension_pruning_is_exact_too():
    tiny, x = _model("transformer_mnist1d"), _inputs("transformer_mnist1d")
    config = StructuredPruneConfig(ratio=0.5, prune_heads=False, ignore=("re:.*norm.*",))
    plan = plan_structured(tiny, config, example_inputs=x)
    with torch.no_grad():
        torch.testing.assert_close(apply_plan(tiny, plan, example_inputs=x)(*x),
                                   mask_structured(tiny, plan, example_inputs=x)(*x), atol=1e-5, rtol=1e-5)


# --- importance criteria ---------------------------------------------------------------------------------------------

def _batches(name: str, n: int = 2):
    g = torch.Generator().manual_seed(2)
    x = _inputs(name)[0]
    return [(torch.randn(8, *x.shape[1:], generator=g), torch.randint(0, 10, (8,), generator=g)) for _ in range(n)]


@pytest.mark.parametrize("importance", ["l1", "l2", "geometric_median", "bn_scale", "taylor", "random"])
def test_every_criterion_prunes_and_stays_exact(importance):
    model, x = _model("digits_cnn"), _inputs("digits_cnn")
    config = StructuredPruneConfig(ratio=0.5, importance=importance)
    plan = plan_structured(model, config, example_inputs=x, data=_batches("digits_cnn"))
    assert {cut.layers[0] for cut in plan.cuts} == {"conv1", "conv2", "conv3"}
    with torch.no_grad():
        torch.testing.assert_close(apply_plan(model, plan, example_inputs=x)(*x),
                                   mask_structured(model, plan, example_inputs=x)(*x), atol=1e-5, rtol=1e-5)


def test_criteria_choose_different_channels():
    model, x = _model("digits_cnn"), _inputs("digits_cnn")
    chosen = {importance: plan_structured(model, StructuredPruneConfig(ratio=0.5, importance=importance),
                                          example_inputs=x, data=_batches("digits_cnn")).cuts
              for importance in ("l1", "bn_scale", "taylor", "random")}
    assert len({cuts for cuts in chosen.values()}) == 4


def test_l1_removes_the_weakest_filters():
    model, x = _model("mnist1d_cnn"), _inputs("mnist1d_cnn")
    plan = plan_structured(model, StructuredPruneConfig(ratio=0.4), example_inputs=x)
    cut = next(c for c in plan.cuts if c.layers == ("conv2",))
    # conv2's group: its filters (out) and conv3's input columns; score = mean of the two L1 norms, each / its mean
    out_norm = model.conv2.weight.abs().sum((1, 2))
    in_norm = model.conv3.weight.abs().sum((0, 2))
    score = (out_norm / out_norm.mean() + in_norm / in_norm.mean()) / 2
    assert sorted(cut.indices[0]) == sorted(torch.argsort(score)[:10].tolist())


def test_random_importance_follows_the_seed():
    model, x = _model("digits_cnn"), _inputs("digits_cnn")
    plans = [plan_structured(model, StructuredPruneConfig(ratio=0.5, importance="random", seed=s), example_inputs=x)
             for s in (0, 0, 1)]
    assert plans[0].cuts == plans[1].cuts != plans[2].cuts


def test_taylor_needs_labelled_data():
    model, x = _model("digits_cnn"), _inputs("digits_cnn")
    with pytest.raises(DataError, match="taylor"):
        prune_structured(model, StructuredPruneConfig(importance="taylor"), example_inputs=x)
    with pytest.raises(DataError, match="labelled"):
        prune_structured(model, StructuredPruneConfig(importance="taylor"), example_inputs=x,
                         data=[(x[0], None)])
    with pytest.raises(DataError, match="at least one batch"):
        prune_structured(model, StructuredPruneConfig(importance="taylor"), example_inputs=x, data=[])


def test_bn_scale_without_batch_norms_has_nothing_to_rank():
    model, x = _model("mnist1d_cnn"), _inputs("mnist1d_cnn")
    with pytest.raises(DataError, match="bn_scale importance cannot score"):
        prune_structured(model, StructuredPruneConfig(importance="bn_scale"), example_inputs=x)


# --- what the graph cannot follow stays whole -------------------------------------------------------------------

class _Scale(nn.Module):
    """A per-channel weight Torch-Pruning has no pruner for."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.gain = nn.Parameter(torch.ones(1, channels, 1))

    def forward(self, x):
        return x * self.gain


class _Folding(nn.Module):
    """Folds pairs of channels into the length: a reshape that mixes channels with positions."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2 = nn.Conv1d(2, 8, 3, padding=1), nn.Conv1d(4, 8, 3, padding=1)
        self.scale, self.conv3 = _Scale(8), nn.Conv1d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        b, _, length = x.shape
        x = self.conv2(self.conv1(x).reshape(b, 4, 2 * length))
        return self.fc(self.conv3(self.scale(x)).mean(-1))


def test_unknown_weights_and_channel_mixing_reshapes_keep_their_groups_whole():
    model, x = _Folding(), (torch.randn(2, 2, 16),)
    result = prune_structured(model, StructuredPruneConfig(ratio=0.5), example_inputs=x)
    assert "reshape" in result.plan.skipped["conv1"] and "_Scale" in result.plan.skipped["conv2"]
    assert result.removed["conv1"] == (0, 8) and result.removed["conv2"] == (0, 8)
    assert result.removed["conv3"] == (4, 4)
    with torch.no_grad():
        assert result.model(*x).shape == (2, 3)


class _Shuffled(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(3, 8, 3, padding=1)
        self.shuffle, self.c = nn.ChannelShuffle(4), nn.Conv2d(16, 8, 1)
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        y = self.shuffle(torch.cat([torch.relu(self.a(x)), torch.relu(self.b(x))], dim=1))
        return self.fc(self.c(y).mean((2, 3)))


def test_nn_channel_shuffle_is_followed_exactly():
    model, x = _Shuffled().eval(), (torch.randn(2, 3, 6, 6),)
    plan = plan_structured(model, StructuredPruneConfig(ratio=0.5), example_inputs=x)
    assert any(set(cut.layers) == {"a", "b"} for cut in plan.cuts)  # the shuffle ties both convs' channels
    pruned = apply_plan(model, plan, example_inputs=x)
    assert pruned.c.in_channels == 8 and pruned.c.in_channels % 4 == 0
    with torch.no_grad():
        torch.testing.assert_close(pruned(*x), mask_structured(model, plan, example_inputs=x)(*x),
                                   atol=1e-5, rtol=1e-5)


# --- the contract: config, inputs, outputs ---------------------------------------------------------------------

@pytest.mark.parametrize("bad", [
    {"ratio": 1.0}, {"ratio": -0.1}, {"ratio": "half"}, {"importance": "magnitude"}, {"scope": "model"},
    {"min_channels": 0}, {"round_to": 0}, {"round_to": 2.5}, {"prune_heads": "yes"}, {"ignore": ("re:(",)},
    {"ignore": "conv1"}, {"seed": 1.5},
])
def test_bad_config_values_are_rejected(bad):
    with pytest.raises(RecipeError, match="allowed|regular expression|pattern"):
        StructuredPruneConfig(**bad)


def test_input_model_is_untouched_and_ratio_zero_changes_nothing():
    model, x = _model("shufflenet_split"), _inputs("shufflenet_split")
    training = {n: m.training for n, m in model.named_modules()}
    state = {k: v.clone() for k, v in model.state_dict().items()}
    prune_structured(model, StructuredPruneConfig(ratio=0.5, importance="taylor"), example_inputs=x,
                     data=_batches("shufflenet_split"))
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert {n: m.training for n, m in model.named_modules()} == training
    assert all(p.grad is None for p in model.parameters())
    same = prune_structured(model, StructuredPruneConfig(ratio=0.0), example_inputs=x)
    assert same.model is not model and not same.plan.cuts and same.params_after == same.params_before
    with torch.no_grad():
        torch.testing.assert_close(same.model(*x), model(*x))


def test_pruned_model_keeps_the_training_mode_of_the_input():
    model = copy.deepcopy(_model("digits_cnn")).train()
    result = prune_structured(model, StructuredPruneConfig(ratio=0.5), example_inputs=_inputs("digits_cnn"))
    assert all(m.training for m in result.model.modules())


def test_a_model_with_nothing_to_prune_says_why():
    with pytest.raises(DataError, match="model outputs"):
        prune_structured(nn.Linear(4, 2), StructuredPruneConfig(ratio=0.5), example_inputs=(torch.randn(1, 4),))
