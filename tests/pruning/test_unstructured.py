import pytest
import torch
from torch import nn

from edgecompress.errors import DataError, RecipeError
from edgecompress.pruning import MaskedPruning, PruneConfig, masks_for, prune, sparsity_at


def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(20, 30), nn.ReLU(), nn.Linear(30, 5))


def _zeros(m):
    return [(layer.weight == 0).float().mean().item() for layer in (m[0], m[2])]


def _total_sparsity(m):
    z = sum((layer.weight == 0).sum().item() for layer in (m[0], m[2]))
    return z / sum(layer.weight.numel() for layer in (m[0], m[2]))


@pytest.mark.parametrize("method", ["magnitude", "random", "gradient"])
def test_layer_scope_reaches_exact_sparsity_in_every_layer(method):
    data = [(torch.randn(8, 20), torch.randint(0, 5, (8,)))]
    pruned = prune(_mlp(), PruneConfig(sparsity=0.7, scope="layer", method=method), data=data)
    assert _zeros(pruned) == pytest.approx([0.7, 0.7], abs=1 / 150)


def test_global_magnitude_prunes_the_smallest_weights_overall():
    model = _mlp()
    with torch.no_grad():
        w = model[2].weight
        w.copy_(torch.sign(w) * (1.0 + w.abs()))  # every weight of the second layer is larger than any of the first
    pruned = prune(model, PruneConfig(sparsity=0.5, scope="global"))
    assert _total_sparsity(pruned) == pytest.approx(0.5, abs=1e-3)
    assert _zeros(pruned)[1] == 0.0 and _zeros(pruned)[0] > 0.5
    kept = pruned[0].weight[pruned[0].weight != 0].abs().min()
    removed = model[0].weight[pruned[0].weight == 0].abs().max()
    assert kept >= removed


def test_zero_sparsity_changes_nothing_and_input_is_untouched():
    model = _mlp()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    pruned = prune(model, PruneConfig(sparsity=0.0))
    x = torch.randn(4, 20)
    torch.testing.assert_close(pruned(x), model(x))
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, before[k])


def test_masks_only_grow_and_reapply_restores_zeros():
    model = _mlp()
    pruner = MaskedPruning(model, PruneConfig(sparsity=0.8, method="random"))
    pruner.apply(0.3)
    first = {n: m.clone() for n, m in pruner.masks.items()}
    pruner.apply(0.6)
    for n, m in pruner.masks.items():
        assert not torch.any(m & ~first[n])  # a weight pruned at step 1 is still pruned at step 2
    with torch.no_grad():
        model[0].weight.add_(1.0)  # an optimizer step would do this
    pruner.reapply()
    assert _total_sparsity(model) == pytest.approx(0.6, abs=1e-3)
    assert pruner.finalize()["0"] > 0


def test_ignore_excludes_layers():
    pruned = prune(_mlp(), PruneConfig(sparsity=0.5, scope="layer", ignore=("re:2",)))
    assert _zeros(pruned)[1] == 0.0 and _zeros(pruned)[0] == pytest.approx(0.5, abs=0.01)


def test_global_masks_split_back_per_layer():
    scores = {"a": torch.tensor([1.0, 2.0, 3.0]), "b": torch.tensor([[0.5, 4.0]])}
    masks = masks_for(scores, 0.4, "global")
    assert masks["a"].tolist() == [False, True, True] and masks["b"].tolist() == [[False, True]]


def test_schedules_end_at_the_target_and_increase():
    for kind in ("linear", "polynomial", "exponential"):
        values = [sparsity_at(i, 5, 0.9, kind) for i in range(1, 6)]
        assert values[-1] == pytest.approx(0.9)
        assert values == sorted(values)
    assert sparsity_at(1, 4, 0.8, "linear") == pytest.approx(0.2)
    assert sparsity_at(1, 4, 0.8, "polynomial") > 0.2  # AGP prunes fastest first
    with pytest.raises(RecipeError):
        sparsity_at(1, 4, 0.5, "cosine")


def test_bad_configs_and_missing_data_are_clear_errors():
    with pytest.raises(RecipeError, match="0 <= sparsity < 1"):
        PruneConfig(sparsity=1.0)
    with pytest.raises(RecipeError, match="StructuredPruneConfig"):
        PruneConfig(method="structured")
    with pytest.raises(DataError, match="needs data"):
        prune(_mlp(), PruneConfig(method="gradient"))
    with pytest.raises(DataError, match="labelled"):
        prune(_mlp(), PruneConfig(method="gradient"), data=[(torch.randn(4, 20), None)])
