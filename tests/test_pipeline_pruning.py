"""Structured pruning in the pipeline: channels physically removed in steps with fine-tuning, the artifact
smaller, and the recipe keys validated."""

import pytest
import torch

from edgecompress import compress
from edgecompress.errors import RecipeError
from edgecompress.model_io import load_model
from edgecompress.recipe import load_recipe


def test_structured_pruning_end_to_end_on_the_trained_mnist1d_cnn(tmp_path, fast_measure):
    loaded = load_model("builtin:mnist1d_cnn")
    before = {k: v.clone() for k, v in loaded.model.state_dict().items()}
    recipe = {"pruning": {"enabled": True, "type": "structured", "sparsity": 0.3, "importance": "l2",
                          "iterative": True, "iterations": 2, "fine_tune_epochs": 3},
              "quantization": {"enabled": True, "type": "int8", "calibration_samples": 200},
              "output": {"format": "onnx"}}
    result = compress(loaded.model, recipe, data=loaded.dataset, example_inputs=loaded.example_inputs,
                      out_dir=tmp_path, measure=fast_measure)
    r = result.report
    stage = next(s for s in r["stages"] if s["name"] == "prune")
    assert [h["target_ratio"] for h in stage["history"]] == [0.2625, 0.3]  # polynomial schedule
    assert stage["params_after"] < 0.65 * stage["params_before"]  # measured 5,210 → 2,904 parameters
    assert r["compressed"]["macs"] < 0.65 * r["baseline"]["macs"]  # measured 31,750 → 18,800
    assert r["compressed"]["params"] == stage["params_after"]
    assert r["compressed"]["accuracy"] >= 0.92  # measured 0.946 with INT8 (float 0.948)
    assert r["artifacts"][1]["parity"]["top1_agreement"] >= 0.99
    for k, v in loaded.model.state_dict().items():
        torch.testing.assert_close(v, before[k])  # the input model is never modified


def test_structured_keys_are_validated():
    recipe = load_recipe({"pruning": {"enabled": True, "type": "structured", "importance": "geometric_median",
                                      "round_to": 8, "min_channels": 4}})
    assert recipe.stages[0].config.importance == "geometric_median"
    with pytest.raises(RecipeError, match="importance, round_to apply to type 'structured'"):
        load_recipe({"pruning": {"enabled": True, "type": "magnitude", "importance": "l1", "round_to": 8}})
    with pytest.raises(RecipeError, match=r"pruning\.importance: 'l3'"):
        load_recipe({"pruning": {"enabled": True, "type": "structured", "importance": "l3"}})
    with pytest.raises(RecipeError, match="removes whole channels"):
        load_recipe({"pruning": {"enabled": True, "type": "structured", "pattern": "2:4"}})
