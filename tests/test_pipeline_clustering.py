"""Weight sharing as a pipeline stage: k-means clustering with fine-tuning, then an ONNX file that stores packed
indices plus the codebook."""

import pytest

from edgecompress import compress
from edgecompress.errors import RecipeError
from edgecompress.model_io import load_model
from edgecompress.recipe import load_recipe


def test_clustering_stage_end_to_end_on_the_trained_mnist1d_cnn(tmp_path, fast_measure):
    loaded = load_model("builtin:mnist1d_cnn")
    recipe = {"clustering": {"enabled": True, "bits": 4, "fine_tune_epochs": 3}, "output": {"format": "onnx"}}
    result = compress(loaded.model, recipe, data=loaded.dataset, example_inputs=loaded.example_inputs,
                      out_dir=tmp_path, measure=fast_measure)
    r = result.report
    stage = next(s for s in r["stages"] if s["name"] == "cluster")
    assert stage["clusters"] == 16
    for name, p in result.model.named_parameters():
        if p.dim() > 1:
            assert p.unique().numel() <= 16, name
    assert r["compressed"]["size_bytes"] * 2.5 < r["baseline"]["size_bytes"]  # measured 3.2× smaller
    assert r["compressed"]["accuracy"] >= 0.92  # measured 0.936 (float 0.948)


def test_cluster_keys_are_validated():
    with pytest.raises(RecipeError, match="give bits .4. or clusters .16., not both"):
        load_recipe({"clustering": {"enabled": True, "bits": 4, "clusters": 16}})
    with pytest.raises(RecipeError, match=r"clustering\.bits: 9"):
        load_recipe({"clustering": {"enabled": True, "bits": 9}})
    recipe = load_recipe({"clustering": {"enabled": True}, "quantization": {"enabled": True},
                          "pruning": {"enabled": True}})
    assert [s.kind for s in recipe.stages] == ["prune", "cluster", "quantize"]
