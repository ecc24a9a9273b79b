"""Both recipe forms load and normalise to one ordered Recipe (X1, X2)."""

import json
from importlib.resources import files

import pytest

from edgecompress.recipe import (
    STAGE_ORDER,
    FinetuneParams,
    OptimizationSection,
    PruneParams,
    QuantizeParams,
    Recipe,
    Stage,
    load_recipe,
    parse_recipe_yaml,
)

# The recipe of the original design, verbatim from SPEC.md ("must load and run unchanged").
SPEC_TEXT = '''\
quantization:
  enabled: true
  type: "int8"            # fp32, fp16, int8, int4, mixed
  strategy: "post_training"  # post_training, quantization_aware, dynamic
  calibration_samples: 100
  per_channel: true
pruning:
  enabled: true
  type: "magnitude"       # magnitude, structured, gradient, random
  sparsity: 0.5
  iterative: true
  iterations: 10
  fine_tune_epochs: 5
distillation:
  enabled: false
  temperature: 5.0
  alpha: 0.5
  beta: 0.5
  epochs: 10
nas:
  enabled: false
  search_method: "darts"  # darts, nasnet, enas
  search_space: "default"
  num_nodes: 4
  search_epochs: 50
optimization:
  target_device: "edge_mcu"  # edge_mcu, edge_gpu, cloud
  max_size_mb: 1.0
  max_latency_ms: 100
  min_accuracy: 0.90
  target_flops: 1000000
output:
  format: "tflite"        # tflite, onnx, torchscript
  optimize_for: "latency" # latency, size, accuracy
  include_metadata: true
'''

STAGES_TEXT = '''\
stages:
  - prune: {type: magnitude, sparsity: 0.7, fine_tune_epochs: 2}
  - finetune: {epochs: 3, learning_rate: 0.0005}
  - quantize: {type: int8, calibration_samples: 200}
optimization: {max_size_mb: 0.1}
output: {format: onnx}
'''


def test_packaged_design_recipe_is_the_spec_text_verbatim():
    assert (files("edgecompress") / "recipes" / "design.yaml").read_text(encoding="utf-8") == SPEC_TEXT


@pytest.mark.parametrize("source", ["builtin:design", SPEC_TEXT])
def test_design_recipe_normalises_to_prune_then_quantize(source):
    recipe = load_recipe(source) if source.startswith("builtin:") else parse_recipe_yaml(source)
    assert [s.kind for s in recipe.stages] == ["prune", "quantize"]  # written quantization first
    prune, quantize = recipe.stages
    assert prune.config == PruneParams(type="magnitude", sparsity=0.5, iterative=True, iterations=10,
                                       fine_tune_epochs=5)
    assert quantize.config == QuantizeParams(type="int8", strategy="post_training", calibration_samples=100,
                                             per_channel=True)
    assert recipe.output.format == "tflite" and recipe.output.optimize_for == "latency"
    assert recipe.optimization == OptimizationSection(target_device="edge_mcu", max_size_mb=1.0,
                                                      max_latency_ms=100.0, min_accuracy=0.9,
                                                      target_flops=1_000_000)
    assert recipe.stage("distill") is None and recipe.stage("search") is None
    assert recipe.lint() == []


def test_default_recipe_is_the_demo():
    recipe = load_recipe("builtin:default")
    assert [s.kind for s in recipe.stages] == ["prune", "quantize"]
    prune, quantize = recipe.stage("prune").config, recipe.stage("quantize").config
    assert (prune.type, prune.sparsity, prune.iterative, prune.iterations, prune.fine_tune_epochs) == (
        "magnitude", 0.5, True, 3, 1)
    assert (quantize.type, quantize.strategy, quantize.calibration_samples, quantize.observer) == (
        "int8", "post_training", 200, "percentile")
    assert recipe.output.format == "onnx"
    assert (recipe.optimization.max_size_mb, recipe.optimization.min_accuracy) == (0.05, 0.9)
    assert recipe.lint() == []


def test_omitted_sections_are_disabled_and_defaults_apply():
    recipe = load_recipe({"pruning": {"enabled": True}})
    assert [s.kind for s in recipe.stages] == ["prune"]
    assert recipe.stages[0].config == PruneParams()
    assert recipe.output.format == "onnx" and recipe.optimization.max_size_mb is None
    assert (recipe.training.batch_size, recipe.training.seed, recipe.training.eval_batch_size) == (128, 0, 512)
    assert load_recipe({"quantization": {"type": "int4"}}).stages == ()  # present but not enabled


def test_an_empty_section_means_its_defaults():
    assert load_recipe({"quantization": None, "output": None}) == load_recipe({})


def test_sections_become_stages_in_the_canonical_order():
    recipe = load_recipe({name: {"enabled": True} for name in ("quantization", "pruning", "distillation", "nas")})
    assert [s.kind for s in recipe.stages] == ["search", "distill", "prune", "quantize"]


def test_stages_form_keeps_its_order_and_parameters():
    recipe = parse_recipe_yaml(STAGES_TEXT)
    assert [s.kind for s in recipe.stages] == ["prune", "finetune", "quantize"]
    assert recipe.stages[0].config.sparsity == 0.7 and recipe.stages[0].config.fine_tune_epochs == 2
    assert recipe.stages[1].config == FinetuneParams(epochs=3, learning_rate=0.0005)
    assert recipe.stages[2].config.calibration_samples == 200
    assert recipe.optimization.max_size_mb == 0.1


def test_stages_in_canonical_order_are_accepted_with_repeats():
    kinds = ["search", "distill", "prune", "prune", "finetune", "quantize"]
    recipe = load_recipe({"stages": [{k: None} for k in kinds]})
    assert [s.kind for s in recipe.stages] == kinds
    assert STAGE_ORDER == ("search", "distill", "prune", "factorize", "finetune", "cluster", "quantize")


def test_unsafe_order_is_allowed_with_the_flag_and_reported_by_lint():
    recipe = load_recipe({"allow_unsafe_order": True, "stages": [{"quantize": {}}, {"prune": {}}]})
    assert [s.kind for s in recipe.stages] == ["quantize", "prune"]
    [warning] = recipe.lint()
    assert "stages[0] 'quantize'" in warning and "stages[1] 'prune'" in warning and "allow_unsafe_order" in warning


def test_scientific_notation_is_a_number():
    recipe = parse_recipe_yaml("pruning: {enabled: true, learning_rate: 1e-3}\noptimization: {max_size_mb: 5E-2}")
    assert recipe.stages[0].config.learning_rate == pytest.approx(1e-3)
    assert recipe.optimization.max_size_mb == pytest.approx(0.05)


@pytest.mark.parametrize("source", ["builtin:design", "builtin:default", STAGES_TEXT])
def test_to_dict_is_json_and_round_trips(source):
    recipe = load_recipe(source) if source.startswith("builtin:") else parse_recipe_yaml(source)
    as_dict = recipe.to_dict()
    text = json.dumps(as_dict)
    assert set(as_dict) == {"name", "description", "stages", "optimization", "output", "training",
                            "allow_unsafe_order"}
    assert as_dict["stages"][0]["kind"] == recipe.stages[0].kind
    again = load_recipe(json.loads(text))
    assert again == recipe
    assert again.to_dict() == as_dict


def test_to_dict_round_trips_with_unsafe_order_and_ignore_lists():
    recipe = load_recipe({"allow_unsafe_order": True, "name": "x", "training": {"seed": 3},
                          "stages": [{"quantize": {"ignore": ["fc", "re:.*head"]}}, {"prune": {"sparsity": 0.2}}]})
    assert load_recipe(json.loads(json.dumps(recipe.to_dict()))) == recipe
    assert recipe.stages[0].config.ignore == ("fc", "re:.*head")


def test_load_recipe_accepts_a_recipe_a_path_and_a_pathlike(tmp_path):
    recipe = parse_recipe_yaml(STAGES_TEXT)
    assert load_recipe(recipe) is recipe
    path = tmp_path / "r.yaml"
    path.write_text(STAGES_TEXT, encoding="utf-8")
    assert load_recipe(path) == recipe
    assert load_recipe(str(path)) == recipe


def test_recipe_and_stage_are_frozen():
    recipe = load_recipe("builtin:default")
    with pytest.raises(Exception, match="frozen"):
        recipe.allow_unsafe_order = True
    with pytest.raises(Exception, match="frozen"):
        recipe.stages[0].config.sparsity = 0.9


def test_stage_of_builds_a_stage_from_yaml_parameters():
    stage = Stage.of("finetune", {"epochs": 2})
    assert stage == Stage(kind="finetune", config=FinetuneParams(epochs=2))
    assert Recipe(stages=(stage,)).stage("finetune") is stage
