"""The YAML recipe (X1, X2): pydantic schema with unknown keys refused, loading, and normalisation of the
original design's sectioned form and of an explicit ``stages:`` list into one ordered Recipe.

Imports only ``edgecompress.errors`` and third-party libraries."""

from .loader import builtin_recipe_names, load_recipe, parse_recipe_yaml
from .model import Recipe, Stage
from .problems import InvalidRecipeError
from .schema import (
    PARAMS_BY_KIND,
    STAGE_ORDER,
    TARGET_DEVICES,
    DistillationSection,
    DistillParams,
    FinetuneParams,
    FinetuneSection,
    NasSection,
    OptimizationSection,
    OutputSection,
    PruneParams,
    PruningSection,
    QuantizationSection,
    QuantizeParams,
    SearchParams,
    StageKind,
    StageParams,
    TrainingSection,
)

__all__ = [
    "Recipe", "Stage", "load_recipe", "parse_recipe_yaml", "builtin_recipe_names", "InvalidRecipeError",
    "STAGE_ORDER", "TARGET_DEVICES", "PARAMS_BY_KIND", "StageKind", "StageParams",
    "QuantizationSection", "PruningSection", "DistillationSection", "NasSection", "OptimizationSection",
    "OutputSection", "TrainingSection", "FinetuneSection",
    "QuantizeParams", "PruneParams", "DistillParams", "SearchParams", "FinetuneParams",
]
