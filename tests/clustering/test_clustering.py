"""Weight clustering (L3): k-means codebooks per layer or per channel, zeros kept, fine-tuning on the codebook."""

import pytest
import torch
from torch import nn

from edgecompress.clustering import INITS, ClusterConfig, ClusteredTraining, cluster, kmeans_1d
from edgecompress.errors import DataError, RecipeError
from edgecompress.pruning import PruneConfig, prune


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv1d(4, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6, 5))


def _distinct(t: torch.Tensor) -> int:
    return torch.unique(t).numel()


@pytest.mark.parametrize("init", INITS)
def test_kmeans_finds_well_separated_clusters_and_their_means(init):
    g = torch.Generator().manual_seed(0)
    centers = torch.tensor([-5.0, 0.5, 7.0], dtype=torch.float64)
    truth = torch.arange(3).repeat_interleave(100)
    values = centers[truth] + 0.1 * torch.randn(300, generator=g, dtype=torch.float64)
    values = values[torch.randperm(300, generator=g)]
    truth = torch.bucketize(values, torch.tensor([-2.0, 3.0], dtype=torch.float64))
    centroids, labels = kmeans_1d(values[None], 3, init=init, generator=torch.Generator().manual_seed(1))
    assert torch.equal(labels[0], truth)
    expected = torch.stack([values[truth == j].mean() for j in range(3)])
    torch.testing.assert_close(centroids[0], expected, rtol=0, atol=1e-12)


def test_kmeans_result_is_a_lloyd_fixed_point():
    values = torch.randn(2, 2000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    centroids, labels = kmeans_1d(values, 8, iterations=500, generator=torch.Generator().manual_seed(0))
    for row in range(2):
        nearest = (values[row, :, None] - centroids[row, None, :]).abs().argmin(dim=1)
        assert torch.equal(labels[row], nearest)
        for j in range(8):
            torch.testing.assert_close(centroids[row, j], values[row][labels[row] == j].mean(), rtol=0, atol=1e-12)


def test_kmeans_rows_are_independent_and_few_distinct_values_are_exact():
    g = torch.Generator().manual_seed(0)
    few = torch.tensor([-1.5, 0.25, 3.0, 9.0], dtype=torch.float64)[torch.randint(0, 4, (500,), generator=g)]
    many = torch.randn(500, generator=g, dtype=torch.float64)
    centroids, labels = kmeans_1d(torch.stack([few, many]), 6, init="linear")
    assert torch.equal(centroids[0].gather(0, labels[0]), few)  # 4 values, 6 centroids: exact
    alone, alone_labels = kmeans_1d(many[None], 6, init="linear")
    assert torch.equal(centroids[1], alone[0]) and torch.equal(labels[1], alone_labels[0])


def test_kmeans_ignores_invalid_entries():
    values = torch.tensor([[1.0, 1.1, 5.0, 5.1, 100.0, -100.0]], dtype=torch.float64)
    valid = torch.tensor([[True, True, True, True, False, False]])
    centroids, _ = kmeans_1d(values, 2, valid=valid, init="linear")
    torch.testing.assert_close(centroids[0], torch.tensor([1.05, 5.05], dtype=torch.float64))


@pytest.mark.parametrize(("kwargs", "words"), [
    ({"bits": 4, "clusters": 16}, ["bits=4", "clusters=16", "not both"]),
    ({"bits": 0}, ["0", "1 to 8"]), ({"bits": 9}, ["9", "1 to 8"]), ({"bits": True}, ["True", "1 to 8"]),
    ({"clusters": 1}, ["1", "2 to 256"]), ({"clusters": 300}, ["300", "2 to 256"]),
    ({"init": "random"}, ["'random'", "kmeans++", "linear", "density"]),
    ({"per_channel": "yes"}, ["'yes'", "true or false"]),
    ({"iterations": 0}, ["0", "1 to 10000"]),
    ({"ignore": ("re:[",)}, ["re:[", "regular expression"]),
])
def test_config_rejects_bad_values_naming_value_and_allowed(kwargs, words):
    with pytest.raises(RecipeError) as e:
        ClusterConfig(**kwargs)
    assert all(w in str(e.value) for w in words), str(e.value)


def test_config_counts_clusters():
    assert ClusterConfig().num_clusters == 16
    assert ClusterConfig(bits=2).num_clusters == 4
    assert ClusterConfig(clusters=12).num_clusters == 12


def test_per_layer_and_per_channel_codebooks():
    model = _net()
    per_layer = cluster(model, ClusterConfig(bits=2))
    per_channel = cluster(model, ClusterConfig(bits=2, per_channel=True))
    for i in (0, 3):
        w_layer, w_channel = per_layer[i].weight, per_channel[i].weight
        assert _distinct(w_layer) <= 4
        assert all(_distinct(row) <= 4 for row in w_channel)
        assert _distinct(w_channel) > 4 * 2  # different centroids in different channels
        # a codebook per channel fits each channel better
        original = model[i].weight
        assert (w_channel - original).pow(2).sum() < (w_layer - original).pow(2).sum()
        assert torch.equal(per_layer[i].bias, model[i].bias)  # biases are not clustered
    assert not torch.equal(model[0].weight, per_layer[0].weight)  # the input model is left as it was


def test_codebooks_rebuild_the_weights():
    for per_channel in (False, True):
        trainer = ClusteredTraining(_net(), ClusterConfig(clusters=5, per_channel=per_channel))
        books = trainer.codebooks()
        assert set(books) == {"0", "3"}
        for name, (indices, centroids) in books.items():
            weight = trainer.model.get_submodule(name).weight
            assert indices.shape == weight.shape and indices.dtype == torch.int64
            if per_channel:
                assert centroids.shape == (weight.shape[0], 5)
                rebuilt = centroids.gather(1, indices.reshape(weight.shape[0], -1)).reshape(weight.shape)
            else:
                assert centroids.shape == (5,)
                rebuilt = centroids[indices]
            assert torch.equal(rebuilt, weight)


@pytest.mark.parametrize("per_channel", [False, True])
def test_pruned_zeros_stay_zero_and_take_one_centroid(per_channel):
    pruned = prune(_net(), PruneConfig(sparsity=0.5, scope="layer"))
    config = ClusterConfig(bits=2, per_channel=per_channel)
    trainer = ClusteredTraining(pruned, config)
    optimizer = torch.optim.Adam(trainer.model.parameters(), lr=1e-2)
    x, y = torch.randn(32, 4, 8), torch.randint(0, 5, (32,))
    for _ in range(5):  # the optimizer moves zeros too; step() puts them back
        optimizer.zero_grad()
        nn.functional.cross_entropy(trainer.model(x), y).backward()
        optimizer.step()
        trainer.step()
    clustered = trainer.finalize()
    for i in (0, 3):
        assert torch.equal(clustered[i].weight == 0, pruned[i].weight == 0)
        rows = clustered[i].weight.reshape(clustered[i].weight.shape[0], -1) if per_channel else \
            clustered[i].weight.reshape(1, -1)
        for row in rows:  # with zeros, one of the 4 centroids is the reserved zero
            assert _distinct(row[row != 0]) <= (3 if (row == 0).any() else 4)


def test_fine_tuning_keeps_weights_on_the_codebook_and_moves_centroids_by_the_mean_gradient():
    trainer = ClusteredTraining(_net(), ClusterConfig(bits=3))
    model, lr = trainer.model, 0.1
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    x, y = torch.randn(64, 4, 8), torch.randint(0, 5, (64,))
    losses = []
    for _ in range(20):
        before = {n: c.clone() for n, (_, c) in trainer.codebooks().items()}
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        grads = {n: model.get_submodule(n).weight.grad.clone() for n in before}
        optimizer.step()
        trainer.step()
        losses.append(loss.item())
        for name, (indices, centroids) in trainer.codebooks().items():
            weight = model.get_submodule(name).weight
            assert torch.equal(centroids[indices], weight) and _distinct(weight) <= 8
            for j in range(8):  # plain SGD: each centroid moved by lr × the mean gradient of its members
                members = indices == j
                if members.any():
                    expected = before[name][j] - lr * grads[name][members].mean()
                    torch.testing.assert_close(centroids[j], expected, rtol=0, atol=1e-6)
    assert losses[-1] < losses[0]


def test_ignored_layers_are_left_alone_and_nothing_to_cluster_is_an_error():
    model = _net()
    clustered = cluster(model, ClusterConfig(bits=2, ignore=("re:3",)))
    assert torch.equal(clustered[3].weight, model[3].weight) and _distinct(clustered[0].weight) <= 4
    with pytest.raises(DataError, match="no conv/linear layer"):
        cluster(model, ClusterConfig(ignore=("re:.*",)))


def _accuracy(model, x, y):
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item() * 100


@pytest.mark.slow
def test_real_model_clustered_at_16_keeps_accuracy_and_shrinks_the_onnx_file(tmp_path):
    import numpy as np

    from edgecompress.datasets import load_dataset
    from edgecompress.export import get_exporter
    from edgecompress.model_io import load_model

    loaded = load_model("builtin:mnist1d_cnn")
    data = load_dataset(loaded.dataset)
    model = loaded.model.eval()
    float_acc = _accuracy(model, data.x_test, data.y_test)
    trainer = ClusteredTraining(model, ClusterConfig(bits=4))
    one_shot_acc = _accuracy(trainer.model.eval(), data.x_test, data.y_test)
    torch.manual_seed(0)
    optimizer = torch.optim.Adam(trainer.model.parameters(), lr=5e-4)
    trainer.model.train()
    for epoch in range(3):
        for x, y in data.batches("train", batch_size=128, shuffle=True, seed=epoch):
            optimizer.zero_grad()
            nn.functional.cross_entropy(trainer.model(x), y).backward()
            optimizer.step()
            trainer.step()
    clustered = trainer.finalize().eval()
    tuned_acc = _accuracy(clustered, data.x_test, data.y_test)
    print(f"float {float_acc:.2f}, one-shot 16 clusters {one_shot_acc:.2f}, fine-tuned {tuned_acc:.2f}")
    assert all(_distinct(m.weight) <= 16 for m in trainer.layers.values())
    assert tuned_acc >= float_acc - 2.0  # measured: see the report / print above

    exporter = get_exporter("onnx")
    dense = exporter.export(model, loaded.example_inputs, tmp_path / "float.onnx", scheme="fp32").path
    small = exporter.export(clustered, loaded.example_inputs, tmp_path / "clustered.onnx", scheme="fp32").path
    ratio = dense.stat().st_size / small.stat().st_size
    print(f"float {dense.stat().st_size} B, clustered {small.stat().st_size} B, {ratio:.2f}x")
    assert ratio > 2.0
    run = exporter.runner(small, threads=1)
    x = data.x_test[:256]
    np.testing.assert_allclose(run(x.numpy()), clustered(x).detach().numpy(), rtol=1e-4, atol=1e-4)
