"""Parsed YAML (a mapping) -> Recipe, for both forms: the original design's sections (put into the safe
order, enabled sections only) and an explicit ordered ``stages:`` list. All problems found are reported
together in one InvalidRecipeError."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .model import Recipe, Stage
from .problems import InvalidRecipeError, join_path, kind_of, show, suggestion, unknown_key, validate_model
from .schema import (
    PARAMS_BY_KIND,
    STAGE_ORDER,
    TECHNIQUE_SECTIONS,
    OptimizationSection,
    OutputSection,
    RecipeHeader,
    TrainingSection,
)

_SHARED_SECTIONS = {"optimization": OptimizationSection, "output": OutputSection, "training": TrainingSection}
TOP_LEVEL_KEYS: tuple[str, ...] = (*RecipeHeader.model_fields, "stages", *TECHNIQUE_SECTIONS, *_SHARED_SECTIONS)


def recipe_from_dict(data: Any, *, source: str = "<dict>") -> Recipe:
    """Validate and normalise a parsed recipe."""
    if not isinstance(data, Mapping):
        raise InvalidRecipeError([f"the top level must be a mapping of sections, got {kind_of(data)} "
                                  f"{show(data)}; allowed keys: {', '.join(sorted(TOP_LEVEL_KEYS))}"],
                                 source=source)
    problems = [unknown_key("", key, value, TOP_LEVEL_KEYS) for key, value in data.items()
                if key not in TOP_LEVEL_KEYS]
    techniques = [name for name in TECHNIQUE_SECTIONS if name in data]
    if "stages" in data and techniques:
        problems.append(f"stages: a recipe uses either 'stages' or the technique sections "
                        f"({', '.join(TECHNIQUE_SECTIONS)}), not both; found 'stages' and "
                        f"{', '.join(repr(t) for t in techniques)}")
        raise InvalidRecipeError(problems, source=source)

    header, header_problems = validate_model(
        RecipeHeader, {k: data[k] for k in RecipeHeader.model_fields if k in data}, "")
    problems += header_problems
    shared = {}
    for name, model in _SHARED_SECTIONS.items():
        shared[name], section_problems = validate_model(model, data.get(name), name)
        problems += section_problems
    if "stages" in data:
        stages, stage_problems = _stages_from_list(data["stages"])
    else:
        stages, stage_problems = _stages_from_sections(data)
    problems += stage_problems
    if problems or header is None:
        raise InvalidRecipeError(problems, source=source)
    try:
        return Recipe(**header.model_dump(), stages=tuple(stages), **shared)
    except InvalidRecipeError as exc:
        raise InvalidRecipeError(exc.problems, source=source) from None


def _stages_from_sections(data: Mapping[str, Any]) -> tuple[list[Stage], list[str]]:
    found: dict[str, Stage] = {}
    problems: list[str] = []
    for name, (model, kind) in TECHNIQUE_SECTIONS.items():
        if name not in data:
            continue
        section, section_problems = validate_model(model, data[name], name)
        problems += section_problems
        if section is not None and section.enabled:
            params = PARAMS_BY_KIND[kind].model_validate(section.model_dump(exclude={"enabled"}))
            found[kind] = Stage(kind=kind, config=params)
    return [found[k] for k in STAGE_ORDER if k in found], problems


def _stages_from_list(items: Any) -> tuple[list[Stage], list[str]]:
    if not isinstance(items, list):
        return [], [f"stages: {show(items)} ({kind_of(items)}) — must be a list of stages, each a one-key "
                    f"mapping such as '- prune: {{sparsity: 0.5}}'; stage kinds: {', '.join(STAGE_ORDER)}"]
    stages: list[Stage] = []
    problems: list[str] = []
    for i, item in enumerate(items):
        stage, item_problems = _stage_from_item(i, item)
        problems += item_problems
        if stage is not None:
            stages.append(stage)
    return stages, problems


def _stage_from_item(i: int, item: Any) -> tuple[Stage | None, list[str]]:
    """``{prune: {...}}`` (as written in YAML) or ``{kind: prune, ...}`` (as ``Recipe.to_dict`` writes it)."""
    path = join_path("stages", [i])
    if isinstance(item, Mapping) and "kind" in item:
        kind, params, params_path = item["kind"], {k: v for k, v in item.items() if k != "kind"}, path
    elif isinstance(item, Mapping) and len(item) == 1:
        (kind, params), = item.items()
        params_path = join_path(path, [str(kind)])
    else:
        return None, [f"{path}: {show(item)} — each stage must be a mapping with one key, its kind, such as "
                      f"'- prune: {{sparsity: 0.5}}'; stage kinds: {', '.join(STAGE_ORDER)}"]
    if not isinstance(kind, str) or kind not in PARAMS_BY_KIND:
        return None, [f"{path}: unknown stage kind {show(kind)}; allowed: {', '.join(STAGE_ORDER)}"
                      + suggestion(kind, STAGE_ORDER)]
    params_model, problems = validate_model(PARAMS_BY_KIND[kind], params, params_path)
    if params_model is None:
        return None, problems
    return Stage(kind=kind, config=params_model), []
