"""The normalised recipe: an ordered tuple of stages plus the optimization, output and training sections.
Both YAML forms become this one type."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import Field, model_validator

from .problems import InvalidRecipeError, validate_model
from .rules import (
    cluster_problems,
    distill_problems,
    factorize_problems,
    lint_stages,
    order_problems,
    prune_problems,
    quantize_problems,
)
from .schema import (
    PARAMS_BY_KIND,
    STAGE_ORDER,
    FrozenModel,
    OptimizationSection,
    OutputSection,
    RecipeHeader,
    StageKind,
    StageParams,
    TrainingSection,
)


class Stage(FrozenModel):
    """One step of the pipeline: its kind and its frozen parameters (the model for that kind)."""

    kind: StageKind
    config: StageParams

    @model_validator(mode="after")
    def _config_matches_kind(self) -> Stage:
        expected = PARAMS_BY_KIND[self.kind]
        if type(self.config) is not expected:
            raise InvalidRecipeError([f"a {self.kind!r} stage takes {expected.__name__}, got "
                                      f"{type(self.config).__name__}"])
        return self

    @classmethod
    def of(cls, kind: str, params: Mapping[str, Any] | None = None) -> Stage:
        """A stage of ``kind`` from its parameters as they would be written in YAML (None: defaults)."""
        if kind not in PARAMS_BY_KIND:
            raise InvalidRecipeError([f"unknown stage kind {kind!r}; allowed: {', '.join(STAGE_ORDER)}"])
        config, problems = validate_model(PARAMS_BY_KIND[kind], params, kind)
        if config is None:
            raise InvalidRecipeError(problems)
        return cls(kind=kind, config=config)

    def to_dict(self) -> dict[str, Any]:
        """``{"kind": ..., **params}``: JSON-serialisable, and loadable as an item of ``stages:``."""
        return {"kind": self.kind, **self.config.model_dump(mode="json")}


class Recipe(RecipeHeader):
    """A validated recipe. Build it with ``load_recipe``; constructing it checks the order of the stages."""

    stages: tuple[Stage, ...] = ()
    optimization: OptimizationSection = Field(default_factory=OptimizationSection)
    output: OutputSection = Field(default_factory=OutputSection)
    training: TrainingSection = Field(default_factory=TrainingSection)

    @model_validator(mode="after")
    def _check_order(self) -> Recipe:
        problems = order_problems([s.kind for s in self.stages], allow_unsafe_order=self.allow_unsafe_order)
        for i, stage in enumerate(self.stages):
            if stage.kind == "quantize":
                problems += quantize_problems(i, stage.config)
            elif stage.kind == "prune":
                problems += prune_problems(i, stage.config)
            elif stage.kind == "distill":
                problems += distill_problems(i, stage.config)
            elif stage.kind == "cluster":
                problems += cluster_problems(i, stage.config)
            elif stage.kind == "factorize":
                problems += factorize_problems(i, stage.config)
        if problems:
            raise InvalidRecipeError(problems)
        return self

    def stage(self, kind: str) -> Stage | None:
        """The first stage of ``kind``, or None when the recipe has none."""
        if kind not in STAGE_ORDER:
            raise InvalidRecipeError([f"unknown stage kind {kind!r}; allowed: {', '.join(STAGE_ORDER)}"])
        return next((s for s in self.stages if s.kind == kind), None)

    def lint(self) -> list[str]:
        """Warnings for known anti-patterns that are allowed but probably not meant."""
        return lint_stages(self.stages, allow_unsafe_order=self.allow_unsafe_order)

    def to_dict(self) -> dict[str, Any]:
        """The normalised recipe, JSON-serialisable; ``load_recipe`` reads it back to an equal Recipe."""
        return {
            "name": self.name,
            "description": self.description,
            "stages": [s.to_dict() for s in self.stages],
            "optimization": self.optimization.model_dump(mode="json"),
            "output": self.output.model_dump(mode="json"),
            "training": self.training.model_dump(mode="json"),
            "allow_unsafe_order": self.allow_unsafe_order,
        }
