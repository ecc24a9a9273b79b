"""Device profiles as data (X5): ``profiles/*.yaml`` shipped with the package, or a user's own YAML file.

``load_profile("cortex_m4")`` / ``load_profile("path/to/board.yaml")`` / ``list_profiles()``. A recipe's
``optimization.target_device`` names a profile, a legacy alias (``edge_mcu``, ``edge_gpu``), or ``cloud``
(no device limits). Imports only ``edgecompress.errors`` and third-party libraries."""

from __future__ import annotations

import functools
import os
from importlib.resources import files
from pathlib import Path
from types import MappingProxyType

import yaml
from pydantic import ValidationError

from .schema import RUNTIME_FORMATS, DeviceClass, MemoryLevel, Operators, Profile, ProfileError

__all__ = [
    "Profile", "Operators", "ProfileError", "DeviceClass", "MemoryLevel", "RUNTIME_FORMATS",
    "load_profile", "list_profiles", "resolve_target", "target_names", "ALIASES", "NO_PROFILE_TARGETS",
]

# Target names of the recipe's first version, kept working: each stands for the profile it names here.
ALIASES: MappingProxyType[str, str] = MappingProxyType({"edge_mcu": "cortex_m4", "edge_gpu": "jetson_orin_nano"})
# Targets without device limits: nothing to check against.
NO_PROFILE_TARGETS: tuple[str, ...] = ("cloud",)
_SUFFIXES = (".yaml", ".yml")


def _profiles_dir():
    return files(__package__).joinpath("profiles")


def list_profiles() -> tuple[str, ...]:
    """Names of the packaged profiles, sorted (each is its file's stem)."""
    return tuple(sorted(p.name[: -len(".yaml")] for p in _profiles_dir().iterdir() if p.name.endswith(".yaml")))


def target_names() -> tuple[str, ...]:
    """Every value ``optimization.target_device`` accepts: the legacy names first, then the profiles."""
    return (*ALIASES, *NO_PROFILE_TARGETS, *list_profiles())


def _problem(error: dict) -> str:
    path = ".".join(str(part) for part in error["loc"]) or "(top level)"
    given = error.get("input")
    shown = "" if error["type"] == "missing" else f" (given {given!r})"
    return f"{path}: {error['msg']}{shown}"


def _parse(text: str, source: str) -> Profile:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ProfileError(f"device profile {source} is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ProfileError(f"device profile {source} must be a mapping of fields, got {type(data).__name__}")
    try:
        return Profile.model_validate(data)
    except ValidationError as e:
        problems = "\n".join(f"  - {_problem(err)}" for err in e.errors(include_url=False))
        raise ProfileError(f"invalid device profile {source}:\n{problems}") from None


@functools.cache
def _builtin(name: str) -> Profile:
    resource = _profiles_dir().joinpath(f"{name}.yaml")
    profile = _parse(resource.read_text(encoding="utf-8"), f"{name}.yaml (packaged)")
    if profile.name != name:
        raise ProfileError(f"device profile {name}.yaml (packaged): name is {profile.name!r}; it must equal the "
                           f"file's stem {name!r}")
    return profile


def load_profile(source: str | os.PathLike[str] | Profile) -> Profile:
    """A Profile from a packaged name (or a legacy alias such as ``edge_mcu``), or from a YAML file path."""
    if isinstance(source, Profile):
        return source
    text = os.fspath(source)
    if isinstance(source, os.PathLike) or text.endswith(_SUFFIXES) or os.sep in text:
        path = Path(text)
        if not path.is_file():
            raise ProfileError(f"device profile file not found: {path}")
        return _parse(path.read_text(encoding="utf-8"), str(path))
    name = ALIASES.get(text, text)
    if name not in list_profiles():
        raise ProfileError(f"unknown device profile {text!r}; allowed: {', '.join(map(repr, list_profiles()))}, "
                           f"the aliases {', '.join(map(repr, ALIASES))}, or a path to a .yaml profile")
    return _builtin(name)


def resolve_target(target_device: str | os.PathLike[str] | Profile) -> Profile | None:
    """The profile a recipe's ``target_device`` stands for; None for targets without limits (``cloud``)."""
    if isinstance(target_device, str) and target_device in NO_PROFILE_TARGETS:
        return None
    return load_profile(target_device)
