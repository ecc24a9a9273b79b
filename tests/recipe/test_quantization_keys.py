"""The quantization suite's recipe keys: accepted where they make sense, refused with a reason where not."""

import pytest

from edgecompress.errors import RecipeError
from edgecompress.recipe import load_recipe


def problems_of(source) -> list[str]:
    with pytest.raises(RecipeError) as info:
        load_recipe(source)
    return info.value.problems


def quantization(**keys):
    return {"quantization": {"enabled": True, **keys}}


@pytest.mark.parametrize("keys", [
    dict(type="int8", observer="entropy", equalization=True, bias_correction=True, adaround=True),
    dict(type="int8", strategy="dynamic"),
    dict(type="fp16"),
    dict(type="int4", group_size=64, weight_symmetric=False),
    dict(type="ternary", strategy="quantization_aware", qat={"epochs": 2, "learning_rate": 0.001}),
    dict(type="mixed", mixed={"size_budget": 0.75, "bits": [4, 8, 16], "metric": "loss"}),
    dict(type="binary", strategy="quantization_aware", observer="mse"),
])
def test_valid_combinations_load(keys):
    loaded = load_recipe(quantization(**keys)).stage("quantize").config.model_dump(mode="json")
    for key, value in keys.items():
        assert loaded[key] == ({**loaded[key], **value} if isinstance(value, dict) else value)


@pytest.mark.parametrize("keys,message", [
    (dict(type="int4", strategy="dynamic"), "strategy 'dynamic' quantizes to int8 only, got type 'int4'"),
    (dict(type="fp16", strategy="quantization_aware"), "type 'fp16' is a conversion"),
    (dict(type="int8", group_size=32), "group_size applies to low-bit weights"),
    (dict(type="int8", strategy="dynamic", adaround=True), "adaround refine post-training integer quantization"),
    (dict(type="mixed", strategy="quantization_aware"), "type 'mixed' takes strategy 'post_training'"),
])
def test_incompatible_keys_are_refused_with_the_reason(keys, message):
    problems = problems_of(quantization(**keys))
    assert len(problems) == 1 and message in problems[0] and problems[0].startswith("stages[0] 'quantize'")


def test_nested_sections_reject_unknown_keys_and_bad_values():
    [problem] = problems_of(quantization(type="mixed", mixed={"size_budget": 0.75, "bits": [4, 5]}))
    assert problem.startswith("quantization.mixed.bits[1]: 5 is not allowed; allowed: ")
    [problem] = problems_of(quantization(qat={"epoch": 3}))
    assert problem.startswith("quantization.qat.epoch: unknown key") and "did you mean 'epochs'" in problem


def test_post_training_binary_is_allowed_but_warned():
    recipe = load_recipe(quantization(type="binary"))
    assert any("use strategy: quantization_aware" in w for w in recipe.lint())
