"""Recipe.lint(): anti-patterns that are allowed but reported."""

from edgecompress.recipe import load_recipe


def test_pruning_without_fine_tuning_is_reported():
    [warning] = load_recipe({"pruning": {"enabled": True, "fine_tune_epochs": 0}}).lint()
    assert "pruning without fine-tuning" in warning and "stages[0] 'prune'" in warning


def test_a_later_finetune_stage_counts_as_fine_tuning():
    recipe = load_recipe({"stages": [{"prune": {"fine_tune_epochs": 0}}, {"finetune": {"epochs": 2}}]})
    assert recipe.lint() == []


def test_fp32_quantization_and_zero_sparsity_are_reported():
    warnings = load_recipe({"quantization": {"enabled": True, "type": "fp32"},
                            "pruning": {"enabled": True, "sparsity": 0}}).lint()
    assert len(warnings) == 2
    assert "sparsity is 0" in warnings[0] and "'fp32' does nothing" in warnings[1]


def test_iterations_without_iterative_is_reported():
    [warning] = load_recipe({"pruning": {"enabled": True, "iterations": 5}}).lint()
    assert "iterations is 5 but iterative is false" in warning


def test_a_recipe_without_stages_is_reported():
    [warning] = load_recipe({"quantization": {"enabled": False}}).lint()
    assert "no compression stages" in warning


def test_allowed_unsafe_order_is_reported_but_a_safe_order_with_the_flag_is_not():
    unsafe = load_recipe({"allow_unsafe_order": True, "stages": [{"quantize": {}}, {"prune": {}}]})
    assert any("allowed because allow_unsafe_order is true" in w for w in unsafe.lint())
    safe = load_recipe({"allow_unsafe_order": True, "stages": [{"prune": {}}, {"quantize": {}}]})
    assert safe.lint() == []
