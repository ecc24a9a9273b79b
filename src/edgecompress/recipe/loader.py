"""Reading recipes: YAML text, files, packaged ``builtin:NAME`` recipes, mappings. The YAML loader is
PyYAML's SafeLoader that also refuses duplicate keys (PyYAML alone keeps the last silently) and reads
``1e-3`` as a number (YAML 1.2), not as the string PyYAML 1.1 rules would give."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from importlib.resources import files
from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode

from .model import Recipe
from .normalize import recipe_from_dict
from .problems import InvalidRecipeError

BUILTIN_PREFIX = "builtin:"
MAX_VALUES = 100_000  # values in one recipe once YAML aliases are expanded
MAX_DEPTH = 50  # levels of nesting (the schema needs about five)
_BUILTIN_NAME = re.compile(r"[a-z0-9_]+")


class RecipeYamlLoader(yaml.SafeLoader):
    """SafeLoader + duplicate keys refused + YAML 1.2 floats such as ``1e-3``."""

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if isinstance(key, (str, int, float, bool)) and key in seen:
                raise ConstructorError(None, None, f"duplicate key {key!r} (first given on line {seen[key]})",
                                       key_node.start_mark)
            if isinstance(key, (str, int, float, bool)):
                seen[key] = line
        return super().construct_mapping(node, deep=deep)


RecipeYamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def parse_recipe_yaml(text: str, *, source: str = "<string>") -> Recipe:
    """Parse recipe YAML text; ``source`` names it in error messages."""
    try:
        data = yaml.load(text, Loader=RecipeYamlLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "unknown line"
        problem = exc.problem or exc.context or "invalid YAML"
        raise InvalidRecipeError([f"YAML error at {where}: {problem}"], source=source) from None
    except yaml.YAMLError as exc:
        raise InvalidRecipeError([f"YAML error: {exc}"], source=source) from None
    except (ValueError, OverflowError) as exc:  # e.g. an integer of more than 4300 digits
        raise InvalidRecipeError([f"YAML value error: {exc}"], source=source) from None
    except RecursionError:  # PyYAML composes nested collections recursively
        raise InvalidRecipeError([f"the recipe is nested more than {MAX_DEPTH} levels deep; a recipe is a few "
                                  "sections of settings"], source=source) from None
    if data is None:
        raise InvalidRecipeError(["the recipe is empty; it needs at least one section"], source=source)
    _check_bounds(data, source)
    return recipe_from_dict(data, source=source)


def _check_bounds(data: Any, source: str) -> None:
    """Refuse a recipe nested deeper than MAX_DEPTH, or holding more than MAX_VALUES values once YAML aliases are
    expanded (an alias bomb: ten aliases of ten aliases of …). Iterative, and each shared object is counted
    once, so neither check recurses or walks the expansion."""
    sizes: dict[int, int] = {}
    stack: list[tuple[Any, int, bool]] = [(data, 0, False)]
    while stack:
        value, depth, finished = stack.pop()
        if not isinstance(value, (dict, list)):
            continue
        children = [*value.keys(), *value.values()] if isinstance(value, dict) else value
        if finished:
            sizes[id(value)] = min(MAX_VALUES + 1, 1 + sum(sizes.get(id(c), 1) for c in children))
            continue
        if id(value) in sizes:  # done already (shared), or an ancestor (a cycle, which validation reports)
            continue
        if depth > MAX_DEPTH:
            raise InvalidRecipeError([f"the recipe is nested more than {MAX_DEPTH} levels deep; a recipe is a few "
                                      "sections of settings"], source=source)
        sizes[id(value)] = 1
        stack.append((value, depth, True))
        stack.extend((c, depth + 1, False) for c in children)
    if sizes.get(id(data), 1) > MAX_VALUES:
        raise InvalidRecipeError([f"the recipe expands to more than {MAX_VALUES} values (through YAML aliases?); "
                                  "a recipe is a few sections of settings"], source=source)


def load_recipe(source: Recipe | Mapping[str, Any] | str | os.PathLike[str]) -> Recipe:
    """A Recipe from a Recipe (returned as is), a parsed-YAML mapping, a YAML file path, or
    ``builtin:NAME`` (a recipe packaged with edgecompress: ``builtin:default``, ``builtin:design``)."""
    if isinstance(source, Recipe):
        return source
    if isinstance(source, Mapping):
        _check_bounds(source, "<dict>")
        return recipe_from_dict(source, source="<dict>")
    if isinstance(source, str) and source.startswith(BUILTIN_PREFIX):
        return _load_builtin(source[len(BUILTIN_PREFIX):])
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        return parse_recipe_yaml(_read_text(path), source=str(path))
    raise InvalidRecipeError([f"a recipe is a Recipe, a mapping, a YAML file path or 'builtin:NAME'; got "
                              f"{type(source).__name__}"])


def builtin_recipe_names() -> list[str]:
    folder = files("edgecompress") / "recipes"
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def _load_builtin(name: str) -> Recipe:
    available = builtin_recipe_names()
    if not _BUILTIN_NAME.fullmatch(name) or name not in available:
        raise InvalidRecipeError([f"unknown builtin recipe {name!r}; available: "
                                  f"{', '.join(BUILTIN_PREFIX + n for n in available)}"])
    text = (files("edgecompress") / "recipes" / f"{name}.yaml").read_text(encoding="utf-8")
    return parse_recipe_yaml(text, source=f"{BUILTIN_PREFIX}{name}")


def _read_text(path: Path) -> str:
    if not path.exists():
        raise InvalidRecipeError([f"recipe file not found: {path}"])
    if path.is_dir():
        raise InvalidRecipeError([f"{path} is a directory, not a recipe file"])
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InvalidRecipeError([f"cannot read recipe file {path}: {exc.strerror or exc}"]) from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidRecipeError([f"{path} is not UTF-8 text (a binary file?): undecodable byte at offset "
                                  f"{exc.start}"]) from None
