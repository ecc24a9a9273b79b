"""N2: DARTS — mixed operations, architecture parameters apart from the weights, first-order bilevel steps on
separate splits, derivation of the discrete network, its export, and a short search on MNIST-1D."""

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from edgecompress.datasets import Dataset
from edgecompress.errors import DataError, RecipeError
from edgecompress.export import get_exporter
from edgecompress.nas import (
    DartsConfig,
    DerivedNetwork,
    Genotype,
    SearchNetwork,
    bilevel_step,
    derive,
    search,
    search_architecture,
)
from edgecompress.nas.darts import split_validation

OPS = ("none", "skip_connect", "max_pool_3", "sep_conv_3")


def _tiny_network(seed: int = 0, ops=OPS) -> SearchNetwork:
    torch.manual_seed(seed)
    return SearchNetwork(in_channels=1, num_classes=3, channels=4, cells=3, nodes=2, ops=ops, input_length=12)


def _tiny_dataset(n: int = 48, test_shift: float = 0.0) -> Dataset:
    generator = torch.Generator().manual_seed(0)
    y = torch.randint(0, 3, (n,), generator=generator)
    x = torch.randn(n, 1, 12, generator=generator) + y[:, None, None].float()
    y_test = torch.arange(n // 2) % 3
    x_test = torch.randn(n // 2, 1, 12, generator=generator) + y_test[:, None, None].float() + test_shift
    return Dataset("tiny", x, y, x_test, y_test, num_classes=3)


def test_mixed_op_is_the_softmax_weighted_sum_of_its_operations():
    net = _tiny_network()
    mixed = net.cells[1].edges[0]  # a reduction cell (8 channels), on a cell input: stride 2
    x = torch.randn(2, 8, 12)
    weights = torch.softmax(torch.tensor([0.3, -1.0, 2.0, 0.5]), -1)
    expected = sum(w * op(x) for w, op in zip(weights, mixed.ops, strict=True))
    torch.testing.assert_close(mixed(x, weights), expected)
    one_hot = torch.tensor([0.0, 0.0, 1.0, 0.0])  # a one-hot weight selects max_pool_3 alone
    torch.testing.assert_close(mixed(x, one_hot), mixed.ops[2](x))


def test_arch_parameters_are_apart_from_the_weights():
    net = _tiny_network()
    arch = {id(p) for p in net.arch_parameters()}
    weights = {id(p) for p in net.weights()}
    assert arch and weights and not arch & weights
    assert arch | weights == {id(p) for p in net.parameters()}
    assert net.alphas_normal.shape == (2 + 3, len(OPS))  # node 0 reads 2 states, node 1 reads 3


def test_alpha_gets_gradients_from_validation_batches_and_weights_from_train_batches():
    net = _tiny_network()
    data = _tiny_dataset()
    train, val = (data.x_train[:16], data.y_train[:16]), (data.x_train[16:32], data.y_train[16:32])
    before = copy.deepcopy(net)
    w_opt = torch.optim.SGD(net.weights(), lr=0.1, momentum=0.9)
    a_opt = torch.optim.Adam(net.arch_parameters(), lr=0.1)
    bilevel_step(net, train, val, w_opt, a_opt, grad_clip=1e9)

    def grads(model, batch, params):
        model.train()
        return torch.autograd.grad(F.cross_entropy(model(batch[0]), batch[1]), params(model), allow_unused=True)

    expected_alpha = grads(copy.deepcopy(before), val, SearchNetwork.arch_parameters)
    alpha_from_train = grads(copy.deepcopy(before), train, SearchNetwork.arch_parameters)
    for got, want, other in zip([p.grad for p in net.arch_parameters()], expected_alpha, alpha_from_train,
                                strict=True):
        torch.testing.assert_close(got, want)
        assert not torch.allclose(got, other, atol=1e-6)  # the two splits do give different gradients
    # the weight step sees the updated α (α first, then w) and the train batch only
    after_alpha = copy.deepcopy(before)
    with torch.no_grad():
        for p, q in zip(after_alpha.arch_parameters(), net.arch_parameters(), strict=True):
            p.copy_(q)
    expected_w = grads(after_alpha, train, SearchNetwork.weights)
    w_from_val = grads(copy.deepcopy(after_alpha), val, SearchNetwork.weights)
    got_w = [p.grad for p in net.weights()]
    for got, want in zip(got_w, expected_w, strict=True):
        if want is None:
            assert got is None
        else:
            torch.testing.assert_close(got, want)
    assert not all(torch.allclose(g, v) for g, v in zip(got_w, w_from_val, strict=True) if v is not None)


def test_derive_keeps_the_argmax_op_and_the_two_strongest_inputs_per_node():
    net = _tiny_network()
    # ops: none, skip_connect, max_pool_3, sep_conv_3; edges: node 0 ← states 0, 1; node 1 ← states 0, 1, 2
    normal = torch.zeros(5, 4)
    normal[0, 0], normal[0, 3] = 5.0, 2.0  # 'none' strongest, then sep_conv_3: 'none' is never picked
    normal[1, 2] = 3.0
    normal[2, 1] = 1.0  # skip_connect, softmax weight 0.48
    normal[3, 3] = 4.0  # sep_conv_3, weight 0.95
    normal[4, 0], normal[4, 2] = 6.0, 3.0  # max_pool_3 under a strong 'none': weight 0.05, so this edge is dropped
    with torch.no_grad():
        net.alphas_normal.copy_(normal)
        net.alphas_reduce.zero_()  # ties: the first op other than 'none', the earliest inputs
    genotype = derive(net)
    assert genotype.normal == (("sep_conv_3", 0), ("max_pool_3", 1), ("skip_connect", 0), ("sep_conv_3", 1))
    assert genotype.reduce == (("skip_connect", 0), ("skip_connect", 1), ("skip_connect", 0), ("skip_connect", 1))


def test_derived_network_runs_and_exports_with_parity(tmp_path):
    genotype = Genotype(normal=(("sep_conv_3", 0), ("dil_conv_3", 1), ("max_pool_3", 0), ("skip_connect", 2)),
                        reduce=(("avg_pool_3", 0), ("skip_connect", 1), ("sep_conv_5", 2), ("max_pool_3", 1)))
    torch.manual_seed(0)
    net = DerivedNetwork(genotype, in_channels=1, num_classes=3, channels=4, cells=3, input_length=13)
    net(torch.randn(8, 1, 13))  # odd length: the factorized reduce and the pools must agree on ceil(13 / 2)
    net.eval()
    assert len(net.cells) == 3 and [c.reduction for c in net.cells] == [False, True, True]
    exporter = get_exporter("onnx")
    path = exporter.export(net, net.example_inputs(), tmp_path / "derived.onnx", scheme="fp32").path
    x = torch.randn(4, 1, 13)
    np.testing.assert_allclose(exporter.runner(path, threads=1)(x.numpy()), net(x).detach().numpy(),
                               rtol=1e-4, atol=1e-5)


def test_validation_split_is_carved_from_training_data_only():
    data = _tiny_dataset()
    (x_train, _), (x_val, _) = split_validation(data, 0.25, seed=0)
    assert x_train.shape[0] == 36 and x_val.shape[0] == 12
    rows = {tuple(r.flatten().tolist()) for r in torch.cat([x_train, x_val])}
    assert rows == {tuple(r.flatten().tolist()) for r in data.x_train}
    # the search itself never reads the test split: a different test split gives the same architecture weights
    config = DartsConfig(epochs=1, cells=3, channels=4, nodes=2, ops=OPS, batch_size=8)
    _, history_a, _ = search_architecture(data, config)
    _, history_b, _ = search_architecture(_tiny_dataset(test_shift=3.0), config)
    for a, b in zip(history_a, history_b, strict=True):
        torch.testing.assert_close(a["normal"], b["normal"], rtol=0, atol=0)
    assert not torch.equal(history_a[0]["normal"], history_a[-1]["normal"])  # α did move


def test_search_returns_a_trained_derived_network():
    data = _tiny_dataset()
    config = DartsConfig(epochs=2, cells=3, channels=4, nodes=2, ops=OPS, batch_size=8, train_epochs=2, seed=1)
    result = search(data, config)
    assert len(result.alphas_history) == 3 and len(result.losses) == 2
    assert isinstance(result.model, DerivedNetwork) and result.model.genotype == result.genotype
    assert result.genotype.nodes == 2 and all(op != "none" for op, _ in result.genotype.normal)
    assert 0.0 <= result.accuracy <= 1.0
    # the same seed repeats the search
    again = search_architecture(data, config)[1]
    torch.testing.assert_close(again[-1]["reduce"], result.alphas_history[-1]["reduce"], rtol=0, atol=0)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"ops": ("none", "conv_7")}, "unknown operations"),
    ({"ops": ("none",)}, "no operation besides 'none'"),
    ({"ops": ("skip_connect", "skip_connect")}, "twice"),
    ({"val_fraction": 1.0}, "val_fraction"),
    ({"arch_lr": 0.0}, "arch_lr"),
    ({"cells": 0}, "cells 0"),
    ({"epochs": -1}, "epochs -1"),
])
def test_bad_configs_fail_clearly(kwargs, match):
    with pytest.raises(RecipeError, match=match):
        DartsConfig(**kwargs)


def test_a_network_of_reduction_cells_only_leaves_alphas_normal_alone():
    torch.manual_seed(0)
    net = SearchNetwork(in_channels=1, num_classes=3, channels=4, cells=2, nodes=2, ops=OPS, input_length=12)
    assert all(cell.reduction for cell in net.cells)
    data = _tiny_dataset()
    batch = (data.x_train[:8], data.y_train[:8])
    before = net.alphas_normal.detach().clone()
    bilevel_step(net, batch, batch, torch.optim.SGD(net.weights(), lr=0.1), torch.optim.Adam(net.arch_parameters()))
    assert net.alphas_normal.grad is None and torch.equal(net.alphas_normal, before)
    assert net.alphas_reduce.grad is not None


def test_bad_genotypes_and_data_fail_clearly():
    with pytest.raises(RecipeError, match="inputs 0…1"):
        Genotype(normal=(("skip_connect", 0), ("skip_connect", 2)), reduce=(("skip_connect", 0), ("skip_connect", 1)))
    with pytest.raises(RecipeError, match="'none'"):
        Genotype(normal=(("none", 0), ("skip_connect", 1)), reduce=(("skip_connect", 0), ("skip_connect", 1)))
    images = Dataset("images", torch.randn(8, 1, 4, 4), torch.zeros(8, dtype=torch.long), torch.randn(4, 1, 4, 4),
                     torch.zeros(4, dtype=torch.long))
    with pytest.raises(DataError, match="1-D signals"):
        search(images, DartsConfig(epochs=1))


@pytest.mark.slow
def test_short_search_on_mnist1d_beats_chance_by_far():
    from edgecompress.datasets import load_dataset

    data = load_dataset("builtin:mnist1d")
    config = DartsConfig(epochs=1, cells=3, channels=8, nodes=4, batch_size=128, train_epochs=10, seed=0)
    result = search(data, config)
    print(f"genotype {result.genotype}, accuracy {result.accuracy:.4f}")
    assert result.accuracy > 0.8  # chance is 0.10; measured 0.9730 (53 s: 1 search epoch, 10 training epochs)
