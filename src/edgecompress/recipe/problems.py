"""The one place that turns recipe mistakes into messages: ``<yaml.path>: <what was given> — <what is
allowed>``, collected into one InvalidRecipeError per recipe."""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable, Mapping, Sequence
from types import UnionType
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

from annotated_types import Ge, Gt, Le, Lt
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from ..errors import RecipeError

M = TypeVar("M", bound=BaseModel)

_MAX_SHOWN = 60
_EXPECTED_BY_TYPE_ERROR = {
    "int_type": "an integer", "int_parsing": "an integer", "int_from_float": "an integer",
    "float_type": "a number", "float_parsing": "a number",
    "bool_type": "true or false", "bool_parsing": "true or false",
    "string_type": "a string",
    "tuple_type": "a list", "list_type": "a list",
}


class InvalidRecipeError(RecipeError):
    """A RecipeError that carries each problem found, one line each, in ``problems``."""

    def __init__(self, problems: Sequence[str], *, source: str | None = None) -> None:
        self.problems: list[str] = list(problems)
        self.source = source
        where = f" {source}" if source else ""
        if len(self.problems) == 1:
            message = f"invalid recipe{where}: {self.problems[0]}"
        else:
            lines = "\n".join(f"  - {p}" for p in self.problems)
            message = f"invalid recipe{where}: {len(self.problems)} problems\n{lines}"
        super().__init__(message)


def join_path(prefix: str, loc: Iterable[str | int]) -> str:
    """``("stages", 1, "quantize", "type")`` -> ``stages[1].quantize.type``."""
    path = prefix
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path = f"{path}.{part}" if path else str(part)
    return path


def show(value: Any) -> str:
    """A value as the user wrote it in YAML, shortened."""
    if value is None:
        text = "null"
    elif isinstance(value, bool):
        text = "true" if value else "false"
    else:
        text = repr(value)
    return text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 1] + "…"


def kind_of(value: Any) -> str:
    if value is None:
        return "empty"
    for typ, name in ((bool, "a boolean"), (int, "an integer"), (float, "a float"), (str, "a string"),
                      (Mapping, "a mapping"), (list, "a list"), (tuple, "a list")):
        if isinstance(value, typ):
            return name
    return f"a {type(value).__name__}"


def suggestion(word: Any, options: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` for the closest option, or ``""`` when none is close."""
    close = difflib.get_close_matches(str(word), list(options), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def unknown_key(path: str, key: Any, value: Any, allowed: Iterable[str]) -> str:
    """``path.key: unknown key (value ...); allowed keys: ...; did you mean '...'?``"""
    allowed = sorted(allowed)
    where = join_path(path, [str(key)])
    return (f"{where}: unknown key (value {show(value)}); allowed keys: {', '.join(allowed)}"
            + suggestion(key, allowed))


def not_a_mapping(path: str, value: Any, allowed: Iterable[str]) -> str:
    return (f"{path}: {show(value)} ({kind_of(value)}) — must be a mapping; allowed keys: "
            f"{', '.join(sorted(allowed))}")


def validate_model(model: type[M], data: Any, path: str) -> tuple[M | None, list[str]]:
    """Validate ``data`` (None means all defaults) as ``model``; the instance, or None and the problems
    with their YAML paths under ``path``."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        return None, [not_a_mapping(path, data, model.model_fields)]
    bad_keys = [unknown_key(path, key, value, model.model_fields)
                for key, value in data.items() if not isinstance(key, str)]
    if bad_keys:
        return None, bad_keys
    try:
        return model.model_validate(dict(data)), []
    except ValidationError as exc:
        return None, [_describe(model, path, err) for err in exc.errors()]


def _nested_model(model: type[BaseModel], loc: tuple) -> type[BaseModel]:
    """The model that owns the key at ``loc`` inside ``model`` (nested sections such as quantization.qat)."""
    for part in loc:
        field = model.model_fields.get(part) if isinstance(part, str) else None
        annotation = getattr(field, "annotation", None)
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            break
        model = annotation
    return model


def _describe(model: type[BaseModel], path: str, err: Any) -> str:
    loc = tuple(err["loc"])
    where = join_path(path, loc)
    given = err.get("input")
    kind = err["type"]
    field = model.model_fields.get(loc[0]) if loc and isinstance(loc[0], str) else None
    if kind == "extra_forbidden":
        owner = _nested_model(model, loc[:-1])
        return unknown_key(join_path(path, loc[:-1]), loc[-1], given, owner.model_fields)
    if kind in ("literal_error", "not_allowed"):
        allowed = err.get("ctx", {}).get("allowed") or _literal_values(field)
        return f"{where}: {show(given)} is not allowed; allowed: {', '.join(repr(v) for v in allowed)}"
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal", "finite_number"):
        return f"{where}: {show(given)} — must be {_expected_number(field, kind)}"
    if kind in _EXPECTED_BY_TYPE_ERROR:
        expected = _EXPECTED_BY_TYPE_ERROR[kind]
        if kind.startswith(("int", "float")):
            expected = _expected_number(field, kind)
        elif len(loc) > 1 and isinstance(loc[-1], int) and kind == "string_type":
            expected = "a string (a layer name or 're:<regex>')"
        elif kind in ("tuple_type", "list_type"):
            expected = "a list of layer names (exact or 're:<regex>')"
        if field is not None and _allows_none(field) and len(loc) == 1:
            expected += ", or null"
        return f"{where}: {show(given)} ({kind_of(given)}) — must be {expected}"
    if kind == "string_too_short":
        return f"{where}: {show(given)} — must not be empty"
    if kind == "bad_regex":
        return f"{where}: {show(given)} — {err['msg']}; allowed: a layer name or 're:<regex>'"
    return f"{where}: {show(given)} — {err['msg']}"


def _literal_values(field: FieldInfo | None) -> tuple[Any, ...]:
    if field is None:
        return ()
    for arg in _flatten(field.annotation):
        if get_origin(arg) is Literal:
            return get_args(arg)
    return ()


def _allows_none(field: FieldInfo) -> bool:
    return any(arg is type(None) for arg in _flatten(field.annotation))


def _flatten(annotation: Any) -> list[Any]:
    """The members of a union (or the annotation itself), with Annotated unwrapped."""
    if get_origin(annotation) in (Union, UnionType):
        return [a for arg in get_args(annotation) for a in _flatten(arg)]
    if hasattr(annotation, "__metadata__"):
        return _flatten(get_args(annotation)[0])
    return [annotation]


def _bounds(field: FieldInfo | None) -> list[Any]:
    if field is None:
        return []
    found = list(field.metadata)
    stack = [field.annotation]
    while stack:
        ann = stack.pop()
        found.extend(getattr(ann, "__metadata__", ()))
        stack.extend(a for a in get_args(ann) if a is not type(None))
    return [c for c in found if isinstance(c, (Ge, Gt, Le, Lt))]


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and not math.isinf(x) else f"{x:g}"


def _expected_number(field: FieldInfo | None, kind: str) -> str:
    parts = []
    for c in _bounds(field):
        for attr, op in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<=")):
            if hasattr(c, attr):
                parts.append(f"{op} {_num(getattr(c, attr))}")
    bounds = " and ".join(dict.fromkeys(parts))
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        return bounds
    noun = "an integer" if kind.startswith("int") else "a finite number" if kind == "finite_number" else "a number"
    return f"{noun} {bounds}".strip()
