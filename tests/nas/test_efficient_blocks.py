"""N1: depthwise-separable, inverted residual, squeeze-excitation and MBConv blocks for 1-D and 2-D inputs, the
builder from block specs, and their export to ONNX with numerical parity in ONNX Runtime."""

import numpy as np
import pytest
import torch
from torch import nn

from edgecompress.errors import RecipeError, UnsupportedError
from edgecompress.export import get_exporter
from edgecompress.nas import BlockSpec, DepthwiseSeparable, InvertedResidual, MBConv, SqueezeExcite, build_mobile_net


def _params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize(("block", "expected"), [
    # depthwise 8·3 + BN 2·8, pointwise 8·16 + BN 2·16
    (DepthwiseSeparable(8, 16), 24 + 16 + 128 + 32),
    # depthwise 8·3·3 in 2-D
    (DepthwiseSeparable(8, 16, dims=2), 72 + 16 + 128 + 32),
    # hidden 48: expand 8·48 + BN 96, depthwise 48·3 + BN 96, project 48·8 + BN 16
    (InvertedResidual(8, 8, expand_ratio=6), 384 + 96 + 144 + 96 + 384 + 16),
    # expand_ratio 1 has no expansion layer: depthwise 8·3 + BN 16, project 8·16 + BN 32
    (InvertedResidual(8, 16, expand_ratio=1), 24 + 16 + 128 + 32),
    # the inverted residual above plus SE on 48 channels reduced to int(8·0.25) = 2: 48·2 + 2 and 2·48 + 48
    (MBConv(8, 8, expand_ratio=6), 1120 + 98 + 144),
    (SqueezeExcite(16, 4, dims=2), 16 * 4 + 4 + 4 * 16 + 16),
])
def test_parameter_counts_match_hand_counts(block, expected):
    assert _params(block) == expected


@pytest.mark.parametrize("dims", [1, 2])
@pytest.mark.parametrize(("block", "out_channels", "stride"), [
    (lambda dims: DepthwiseSeparable(8, 16, stride=2, dims=dims), 16, 2),
    (lambda dims: InvertedResidual(8, 12, stride=2, kernel_size=5, dims=dims), 12, 2),
    (lambda dims: MBConv(8, 8, dims=dims, activation="hardswish"), 8, 1),
])
def test_output_shapes(dims, block, out_channels, stride):
    size = 10
    x = torch.randn(3, 8, *(size,) * dims)
    y = block(dims)(x)
    assert y.shape == (3, out_channels, *(size // stride,) * dims)


def test_squeeze_excite_rescales_each_channel_by_a_gate_in_0_1():
    se = SqueezeExcite(6, 2).eval()
    x = torch.rand(2, 6, 9) + 0.1
    ratio = se(x) / x
    # one factor per (sample, channel), constant along the length, strictly between 0 and 1
    torch.testing.assert_close(ratio, ratio[..., :1].expand_as(ratio))
    assert ((ratio > 0) & (ratio < 1)).all()


@pytest.mark.parametrize("block_type", [InvertedResidual, MBConv])
def test_residual_is_the_identity_when_the_projection_is_zeroed(block_type):
    torch.manual_seed(0)
    block = block_type(8, 8, dims=2)
    assert block.use_residual
    nn.init.zeros_(block.project[1].weight)  # the projection's batch norm: the branch outputs exactly 0
    nn.init.zeros_(block.project[1].bias)
    x = torch.randn(2, 8, 5, 5)
    for mode in (block.train, block.eval):
        mode()
        torch.testing.assert_close(block(x), x, rtol=0, atol=0)


@pytest.mark.parametrize(("in_channels", "out_channels", "stride"), [(8, 8, 2), (8, 16, 1)])
def test_no_residual_when_shapes_differ(in_channels, out_channels, stride):
    block = InvertedResidual(in_channels, out_channels, stride=stride)
    nn.init.zeros_(block.project[1].weight)
    nn.init.zeros_(block.project[1].bias)
    assert not block.use_residual
    assert block.eval()(torch.randn(2, in_channels, 8)).abs().max() == 0


def test_builder_follows_the_specs():
    net = build_mobile_net([{"kind": "separable", "out_channels": 16}], input_channels=1, num_classes=10,
                           stem_channels=8)
    # stem 1·8·3 + BN 16, DepthwiseSeparable(8, 16) 200, Linear 16·10 + 10
    assert _params(net) == 24 + 16 + 200 + 170
    specs = [BlockSpec("separable", 16), BlockSpec("inverted_residual", 24, stride=2, repeats=2),
             {"kind": "mbconv", "out_channels": 32, "stride": 2, "kernel_size": 5, "expand_ratio": 4}]
    net = build_mobile_net(specs, input_channels=1, num_classes=10, head_channels=64, activation="hardswish")
    kinds = [type(b) for b in net.blocks]
    assert kinds == [DepthwiseSeparable, InvertedResidual, InvertedResidual, MBConv]
    assert [b.depthwise[0].stride for b in net.blocks] == [(1,), (2,), (1,), (2,)]
    assert not net.blocks[1].use_residual and net.blocks[2].use_residual  # the repeat keeps its shape
    assert net.blocks[3].depthwise[0].kernel_size == (5,)
    assert isinstance(net.blocks[3].se, SqueezeExcite) and isinstance(net.blocks[1].se, nn.Identity)
    assert isinstance(net.blocks[0].depthwise[2], nn.Hardswish)
    assert net(*net.example_inputs(4)).shape == (4, 10)


@pytest.mark.parametrize(("stages", "kwargs", "error", "match"), [
    ([], {}, RecipeError, "non-empty"),
    ([{"kind": "fancy", "out_channels": 8}], {}, RecipeError, "unknown block kind 'fancy'"),
    ([{"kind": "mbconv", "out_channels": 8, "expansion": 6}], {}, RecipeError, r"stages\[0\] has unknown keys"),
    ([{"kind": "mbconv"}], {}, RecipeError, "lacks out_channels"),
    ([{"kind": "separable", "out_channels": 8, "expand_ratio": 6}], {}, RecipeError, "no expansion"),
    ([{"kind": "mbconv", "out_channels": 8, "stride": 0}], {}, RecipeError, "stride 0"),
    ([{"kind": "mbconv", "out_channels": 8, "kernel_size": 4}], {}, RecipeError, "odd"),
    ([{"kind": "mbconv", "out_channels": 8, "se_ratio": 2.0}], {}, RecipeError, "se_ratio"),
    ([{"kind": "mbconv", "out_channels": 8, "activation": "gelu"}], {}, RecipeError, "unknown activation 'gelu'"),
    ([BlockSpec("separable", 8)], {"dims": 3}, UnsupportedError, "got 3"),
])
def test_bad_specs_fail_clearly(stages, kwargs, error, match):
    with pytest.raises(error, match=match):
        build_mobile_net(stages, input_channels=1, num_classes=10, **kwargs)


@pytest.mark.parametrize("dims", [1, 2])
def test_export_to_onnx_runs_with_parity(tmp_path, dims):
    torch.manual_seed(0)
    specs = [BlockSpec("separable", 16), BlockSpec("inverted_residual", 16, stride=2, repeats=2),
             BlockSpec("mbconv", 24, stride=2, activation="silu")]
    net = build_mobile_net(specs, input_channels=1, num_classes=10, dims=dims, head_channels=32,
                           activation="hardswish", input_size=12)
    net(torch.randn(16, 1, *(12,) * dims))  # one training-mode pass so that the batch norms are not the identity
    net.eval()
    exporter = get_exporter("onnx")
    path = exporter.export(net, net.example_inputs(), tmp_path / "net.onnx", scheme="fp32").path
    x = torch.randn(5, 1, *(12,) * dims)
    expected = net(x).detach().numpy()
    np.testing.assert_allclose(exporter.runner(path, threads=1)(x.numpy()), expected, rtol=1e-4, atol=1e-5)
