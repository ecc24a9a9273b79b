import pytest
import torch
from torch import nn
from torch.nn.utils import prune

from edgecompress.measure import count_flops, count_macs, count_params, layer_sparsity, sparsity


def conv_stack() -> nn.Sequential:
    return nn.Sequential(nn.Conv1d(3, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 16, 10))


# Conv1d: out_channels · length · in_channels · kernel = 8·16·3·3; Linear: 128·10. Bias adds are not MACs.
MACS = 8 * 16 * 3 * 3 + 128 * 10


def test_macs_of_a_conv1d_linear_stack_are_exact():
    model = conv_stack()
    assert count_macs(model, (torch.randn(1, 3, 16),)) == MACS == 2432
    assert count_macs(model, torch.randn(2, 3, 16)) == 2 * MACS  # per forward pass, so per batch
    assert count_flops(model, (torch.randn(1, 3, 16),)) == 2 * MACS


def test_count_macs_restores_each_module_mode():
    model = conv_stack().train()
    model[0].eval()
    count_macs(model, (torch.randn(1, 3, 16),))
    assert model.training and model[3].training and not model[0].training


def test_count_params():
    assert count_params(conv_stack()) == (3 * 8 * 3 + 8) + (128 * 10 + 10)


def test_sparsity_of_known_zeros_ignores_biases():
    model = conv_stack()
    with torch.no_grad():
        model[0].weight.view(-1)[:36] = 0  # 36 of 72
        model[3].weight.view(-1)[:320] = 0  # 320 of 1280
        model[0].bias.zero_()
    assert sparsity(model) == pytest.approx((36 + 320) / (72 + 1280))
    assert layer_sparsity(model) == {"0.weight": 0.5, "3.weight": 0.25}


def test_torch_prune_masks_are_read_through():
    model = conv_stack()
    prune.l1_unstructured(model[3], "weight", amount=0.5)
    assert layer_sparsity(model)["3.weight"] == pytest.approx(0.5)
    assert set(layer_sparsity(model)) == {"0.weight", "3.weight"}  # neither weight_orig nor weight_mask
    assert count_params(model) == count_params(conv_stack())


class IntWeightLinear(nn.Module):
    """Keeps its weights as buffers: an int8 copy, and (until converted) the float one."""

    def __init__(self, weight: torch.Tensor):
        super().__init__()
        self.register_buffer("weight_float", weight.clone())
        self.register_buffer("weight_int", torch.round(weight * 10).to(torch.int8))
        self.register_buffer("weight_scale", torch.full((weight.shape[0],), 0.1))

    def forward(self, x):
        return x @ (self.weight_int.float() * 0.1).T


def test_integer_weight_buffers_are_counted():
    weight = torch.tensor([[0.0, 0.01, 1.0, 2.0], [0.0, 0.0, 3.0, -1.0]])  # 0.01 rounds to integer 0
    model = nn.Sequential(IntWeightLinear(weight), nn.BatchNorm1d(2))
    assert layer_sparsity(model) == {"0.weight_int": 0.5}  # the integer copy, not the float one
    assert count_params(model) == 8 + 2 + 2  # int weights + BatchNorm weight and bias
    assert count_macs(model, (torch.randn(1, 4),)) == 8


def test_mask_buffers_are_not_weights():
    model = conv_stack()
    model[3].register_buffer("weight_keep", torch.ones(10, 128, dtype=torch.bool))
    model[3].register_buffer("weight_mask", torch.zeros(10, 128))
    assert set(layer_sparsity(model)) == {"0.weight", "3.weight"}
    assert count_params(model) == count_params(conv_stack())


def test_embeddings_and_norms_are_not_weights():
    model = nn.Sequential(nn.Embedding(10, 4), nn.LayerNorm(4), nn.Linear(4, 2))
    with torch.no_grad():
        model[0].weight.zero_()
    assert sparsity(model) == 0.0
    assert list(layer_sparsity(model)) == ["2.weight"]
