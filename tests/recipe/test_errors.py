"""Every kind of recipe mistake is one RecipeError naming the YAML path, the value and what is allowed."""

import pytest

from edgecompress.errors import RecipeError
from edgecompress.recipe import Recipe, Stage, load_recipe, parse_recipe_yaml


def problems_of(source) -> list[str]:
    with pytest.raises(RecipeError) as info:
        parse_recipe_yaml(source) if isinstance(source, str) else load_recipe(source)
    problems = info.value.problems
    assert problems and all(p in str(info.value) for p in problems)
    return problems


def only_problem(source) -> str:
    [problem] = problems_of(source)
    return problem


def test_bad_enum_lists_the_allowed_values():
    assert only_problem("quantization: {enabled: true, type: int5}") == (
        "quantization.type: 'int5' is not allowed; allowed: 'fp32', 'fp16', 'int8', 'int4', 'int3', 'int2', "
        "'ternary', 'binary', 'mixed'")


def test_out_of_range_names_both_bounds():
    assert only_problem("pruning: {enabled: true, sparsity: 1.5}") == "pruning.sparsity: 1.5 — must be >= 0 and < 1"
    assert only_problem({"quantization": {"percentile": 50}}) == (
        "quantization.percentile: 50 — must be > 50 and <= 100")
    assert only_problem({"optimization": {"min_accuracy": 90}}) == (
        "optimization.min_accuracy: 90 — must be >= 0 and <= 1")


def test_unknown_nested_key_lists_allowed_keys_and_suggests_the_closest():
    problem = only_problem("quantization:\n  enabled: true\n  calibraton_samples: 100\n")
    assert problem.startswith("quantization.calibraton_samples: unknown key (value 100); allowed keys: "
                              "activation_dtype, adaround, adaround_iterations, bias_correction, "
                              "calibration_samples, enabled, equalization,")
    assert problem.endswith("did you mean 'calibration_samples'?")


def test_unknown_top_level_key_suggests_the_section():
    problem = only_problem({"quantisation": {"enabled": True}})
    assert problem.startswith("quantisation: unknown key")
    assert "allowed keys: allow_unsafe_order, clustering, description, distillation" in problem
    assert problem.endswith("did you mean 'quantization'?")


def test_unknown_key_without_a_close_match_has_no_suggestion():
    problem = only_problem({"output": {"zzz": 1}})
    assert "allowed keys: format, include_metadata, optimize_for" in problem and "did you mean" not in problem


@pytest.mark.parametrize(("yaml_text", "expected"), [
    ("pruning: {sparsity: true}", "pruning.sparsity: true (a boolean) — must be a number >= 0 and < 1"),
    ("pruning: {sparsity: '0.5'}", "pruning.sparsity: '0.5' (a string) — must be a number >= 0 and < 1"),
    ("pruning: {sparsity: }", "pruning.sparsity: null (empty) — must be a number >= 0 and < 1"),
    ("quantization: {calibration_samples: 10.5}",
     "quantization.calibration_samples: 10.5 (a float) — must be an integer >= 1"),
    ("quantization: {calibration_samples: true}",
     "quantization.calibration_samples: true (a boolean) — must be an integer >= 1"),
    ("optimization: {max_size_mb: big}", "optimization.max_size_mb: 'big' (a string) — must be a number > 0, or null"),
    ("output: {include_metadata: 'yes'}", "output.include_metadata: 'yes' (a string) — must be true or false"),
    ("optimization: {max_size_mb: .inf}", "optimization.max_size_mb: inf — must be a finite number > 0"),
])
def test_wrong_types_are_refused(yaml_text, expected):
    assert only_problem(yaml_text) == expected


def test_bad_regex_in_ignore_is_refused():
    problem = only_problem({"quantization": {"ignore": ["fc", "re:.*head", "re:(["]}})
    assert problem.startswith("quantization.ignore[2]: 're:([' — not a valid regular expression")
    assert "'re:<regex>'" in problem


def test_ignore_must_be_a_list_of_non_empty_names():
    assert problems_of({"pruning": {"ignore": "fc"}}) == [
        "pruning.ignore: 'fc' (a string) — must be a list of layer names (exact or 're:<regex>')"]
    assert problems_of({"pruning": {"ignore": ["", 3]}}) == [
        "pruning.ignore[0]: '' — must not be empty",
        "pruning.ignore[1]: 3 (an integer) — must be a string (a layer name or 're:<regex>')"]


def test_unknown_target_device_lists_the_devices():
    assert only_problem({"optimization": {"target_device": "toaster"}}) == (
        "optimization.target_device: 'toaster' is not allowed; allowed: 'edge_mcu', 'edge_gpu', 'cloud', "
        "'cortex_a53_iot', 'cortex_m4', 'cortex_m7', 'edge_gateway', 'edge_tpu', 'jetson_orin_nano', 'phone_midrange'")


def test_target_device_accepts_every_device_profile_and_the_legacy_names():
    from edgecompress.devices import list_profiles

    for name in ("edge_mcu", "edge_gpu", "cloud", *list_profiles()):
        assert load_recipe({"optimization": {"target_device": name}}).optimization.target_device == name


def test_all_problems_are_reported_together():
    problems = problems_of({"quantization": {"type": "int5", "observer": "kl"}, "pruning": {"sparsity": 2},
                            "output": {"format": "pt"}, "nmae": "x"})
    assert [p.split(":")[0] for p in problems] == [
        "nmae", "output.format", "pruning.sparsity", "quantization.type", "quantization.observer"]


def test_section_that_is_not_a_mapping():
    assert only_problem("quantization: true").startswith(
        "quantization: true (a boolean) — must be a mapping; allowed keys: activation_dtype")


def test_header_fields_are_typed():
    assert problems_of({"name": 3, "allow_unsafe_order": "yes"}) == [
        "name: 3 (an integer) — must be a string, or null",
        "allow_unsafe_order: 'yes' (a string) — must be true or false"]


def test_mixed_forms_are_refused_even_with_disabled_sections():
    problem = only_problem({"stages": [{"prune": {}}], "quantization": {"enabled": False}})
    assert "either 'stages' or the technique sections" in problem and "'quantization'" in problem


def test_unknown_stage_kind_lists_the_kinds():
    assert only_problem({"stages": [{"prune": {}}, {"quantise": {}}]}) == (
        "stages[1]: unknown stage kind 'quantise'; allowed: search, distill, prune, factorize, finetune, cluster, "
        "quantize; "
        "did you mean 'quantize'?")


def test_stage_items_must_be_one_key_mappings():
    problems = problems_of({"stages": ["prune", {"prune": {}, "quantize": {}}]})
    assert [p.split(":")[0] for p in problems] == ["stages[0]", "stages[1]"]
    assert all("each stage must be a mapping with one key" in p for p in problems)
    assert "must be a list of stages" in only_problem({"stages": {"prune": {}}})


def test_stage_parameter_errors_have_stage_paths():
    problems = problems_of("stages:\n  - prune: {}\n  - quantize: {type: int5, enabled: true}\n")
    assert problems[0] == ("stages[1].quantize.type: 'int5' is not allowed; allowed: "
                           "'fp32', 'fp16', 'int8', 'int4', 'int3', 'int2', 'ternary', 'binary', 'mixed'")
    assert problems[1].startswith("stages[1].quantize.enabled: unknown key (value true); allowed keys: ")
    assert "finetune.epochs: 0 — must be >= 1" in only_problem({"stages": [{"finetune": {"epochs": 0}}]})


def test_quantize_before_prune_is_refused_naming_both_and_the_rule():
    problem = only_problem({"stages": [{"quantize": {}}, {"prune": {}}]})
    assert problem.startswith("stages[0] 'quantize' comes before stages[1] 'prune'")
    assert "search → distill → prune → factorize → finetune → cluster → quantize" in problem
    assert "allow_unsafe_order: true" in problem


def test_finetune_before_prune_is_refused():
    assert only_problem({"stages": [{"finetune": {}}, {"prune": {}}]}).startswith(
        "stages[0] 'finetune' comes before stages[1] 'prune'")


@pytest.mark.parametrize("allow", [False, True])
def test_two_quantize_stages_are_refused_even_when_unsafe_order_is_allowed(allow):
    assert only_problem({"allow_unsafe_order": allow, "stages": [{"quantize": {}}, {"quantize": {}}]}) == (
        "stages[1] 'quantize': a recipe quantizes once, and stages[0] already does")


def test_source_is_named_in_the_message(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("pruning: {sparsity: 2}\n", encoding="utf-8")
    with pytest.raises(RecipeError, match="mine.yaml: pruning.sparsity: 2"):
        load_recipe(path)


def test_wrong_source_types_and_unknown_builtins():
    with pytest.raises(RecipeError, match="got int"):
        load_recipe(3)
    with pytest.raises(RecipeError, match="available: builtin:default, builtin:design"):
        load_recipe("builtin:nope")
    with pytest.raises(RecipeError, match="unknown builtin"):
        load_recipe("builtin:../default")


def test_stage_and_recipe_helpers_refuse_unknown_kinds():
    with pytest.raises(RecipeError, match="unknown stage kind 'export'"):
        Stage.of("export")
    with pytest.raises(RecipeError, match="unknown stage kind 'quantise'"):
        Recipe().stage("quantise")
    with pytest.raises(RecipeError, match="finetune.epochs: 0 — must be >= 1"):
        Stage.of("finetune", {"epochs": 0})


def test_a_stage_refuses_parameters_of_another_kind():
    from edgecompress.recipe import FinetuneParams

    with pytest.raises(RecipeError, match="a 'prune' stage takes PruneParams, got FinetuneParams"):
        Stage(kind="prune", config=FinetuneParams())


def test_constructing_a_recipe_checks_the_order():
    with pytest.raises(RecipeError, match="stages\\[0\\] 'quantize' comes before stages\\[1\\] 'prune'"):
        Recipe(stages=(Stage.of("quantize"), Stage.of("prune")))
