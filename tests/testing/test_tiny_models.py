"""The shipped tiny models: example inputs of any batch size, fx-traceable, gradients reach every layer."""

import pytest
import torch
from torch import nn

from edgecompress.testing import TinyConv1d, TinyMLP, TinyResidual2d

SHAPES = {TinyConv1d: (1, 16), TinyResidual2d: (3, 8, 8), TinyMLP: (20,)}


@pytest.mark.parametrize("cls", list(SHAPES))
def test_tiny_model_contract(cls):
    torch.manual_seed(0)
    model = cls().eval()
    (x,) = model.example_inputs(batch_size=6)
    assert tuple(x.shape) == (6, *SHAPES[cls]) and x.dtype == torch.float32
    assert model.example_inputs()[0].shape[0] == 1
    with torch.no_grad():
        out = model(x)
        torch.testing.assert_close(torch.fx.symbolic_trace(model)(x), out, rtol=0, atol=0)
    assert out.shape == (6, 4) and torch.isfinite(out).all()
    model.train()
    model(x).square().sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_residual_model_has_an_add_and_both_pools():
    graph = torch.fx.symbolic_trace(TinyResidual2d()).graph
    assert any(n.op == "call_function" and n.target.__name__ == "add" for n in graph.nodes)
    kinds = {type(m) for m in TinyResidual2d().modules()}
    assert {nn.MaxPool2d, nn.AdaptiveAvgPool2d, nn.BatchNorm2d} <= kinds
    assert {nn.Conv1d, nn.BatchNorm1d} <= {type(m) for m in TinyConv1d().modules()}
