"""Model input without code execution from files: reference models by name, a factory in an importable
module plus safetensors weights, or a torch.export ``.pt2`` archive checked for pickled payloads."""

from __future__ import annotations

import importlib
import io
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .errors import ModelLoadError
from .lifting import lift_layers

_PICKLE_HINT = (
    "edgecompress does not unpickle model files, because unpickling can run arbitrary code. Save the weights "
    "with safetensors instead (in an environment you trust: "
    "`safetensors.torch.save_file(model.state_dict(), 'model.safetensors')`) or export a .pt2 with "
    "torch.export.save")


@dataclass
class LoadedModel:
    model: nn.Module
    example_inputs: tuple[torch.Tensor, ...] | None
    source: str
    dataset: str | None = None  # the builtin data set a reference model was trained on


def load_model(spec: str, *, weights: str | Path | None = None, progress=None) -> LoadedModel:
    """``builtin:NAME`` | ``package.module:factory`` (+ ``weights`` .safetensors) | ``path/model.pt2``."""
    if spec.startswith("builtin:"):
        if weights is not None:
            raise ModelLoadError("--weights goes with a module:factory model, not with a builtin model")
        return _load_builtin(spec.removeprefix("builtin:"), progress)
    path = Path(spec)
    if path.suffix == ".pt2" or path.is_file():
        if weights is not None:
            raise ModelLoadError("--weights goes with a module:factory model; a .pt2 file carries its weights")
        return _load_pt2(path)
    if ":" in spec:
        return _load_factory(spec, weights)
    raise ModelLoadError(f"cannot load model {spec!r}: expected 'builtin:NAME', 'package.module:factory' or a "
                         "path to a torch.export .pt2 file")


def _load_builtin(name: str, progress) -> LoadedModel:
    from .models import REFERENCE_MODELS, pretrained

    if name not in REFERENCE_MODELS:
        raise ModelLoadError(f"unknown builtin model {name!r}; available: {', '.join(REFERENCE_MODELS)}")
    model = pretrained(name, progress=progress)
    return LoadedModel(model, model.example_inputs(), f"builtin:{name}", REFERENCE_MODELS[name].dataset)


def _load_factory(spec: str, weights: str | Path | None) -> LoadedModel:
    module_name, _, attr = spec.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as e:
        raise ModelLoadError(f"cannot import model factory {spec!r}: {e}") from None
    try:
        model = factory()
    except Exception as e:
        raise ModelLoadError(f"model factory {spec!r} raised {type(e).__name__}: {e}") from None
    if not isinstance(model, nn.Module):
        raise ModelLoadError(f"model factory {spec!r} returned {type(model).__name__}, not a torch.nn.Module")
    if weights is not None:
        load_safetensors_into(model, Path(weights))
    example = model.example_inputs() if callable(getattr(model, "example_inputs", None)) else None
    return LoadedModel(model.eval(), example, spec)


def load_safetensors_into(model: nn.Module, path: Path) -> None:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    _refuse_non_safetensors(path)
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise ModelLoadError(f"{path} is not a valid safetensors file: {e}") from None
    result = model.load_state_dict(state, strict=False)
    missing, unexpected = list(result.missing_keys), list(result.unexpected_keys)
    if missing or unexpected:
        raise ModelLoadError(f"weights in {path} do not fit the model: missing {missing[:8]}, "
                             f"unexpected {unexpected[:8]}")


def _refuse_non_safetensors(path: Path) -> None:
    if not path.is_file():
        raise ModelLoadError(f"weights file {path} does not exist")
    with open(path, "rb") as f:
        head = f.read(9)
    size = path.stat().st_size
    if head[:1] == b"\x80" or head[:2] == b"PK":
        raise ModelLoadError(f"{path} is a pickle-based PyTorch file (torch.save). {_PICKLE_HINT}")
    header_len = int.from_bytes(head[:8], "little") if len(head) >= 8 else -1
    if len(head) < 9 or header_len <= 0 or 8 + header_len > size or head[8:9] != b"{":
        raise ModelLoadError(f"{path} is not a safetensors file (bad or truncated header)")


def _load_pt2(path: Path) -> LoadedModel:
    if not path.is_file():
        raise ModelLoadError(f"model file {path} does not exist")
    data = _sanitised_pt2(path)
    try:
        program = torch.export.load(io.BytesIO(data))
        module = lift_layers(program.module())
    except Exception as e:
        raise ModelLoadError(f"{path} could not be loaded as a torch.export program: {type(e).__name__}: {e}") from None
    return LoadedModel(module, _placeholder_inputs(program), str(path))


def _sanitised_pt2(path: Path) -> bytes:
    """The archive's bytes with the pickled sample inputs blanked, after refusing any archive whose weights or
    constants are pickled (torch.export.load would unpickle those, falling back to full pickle)."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise ModelLoadError(f"{path} is not a torch.export .pt2 archive: {e}") from None
    out = io.BytesIO()
    with archive, zipfile.ZipFile(out, "w") as clean:
        names = archive.namelist()
        if not any("/models/" in n and n.endswith(".json") for n in names):
            raise ModelLoadError(f"{path} has no exported program in it (not a torch.export.save archive)")
        for name in names:
            try:
                payload = archive.read(name)
            except (zipfile.BadZipFile, OSError, RuntimeError) as e:
                raise ModelLoadError(f"{path} is corrupt ({name}: {e})") from None
            if name.endswith("_config.json") and ("/data/weights/" in name or "/data/constants/" in name):
                _refuse_pickled_entries(path, name, payload)
            elif ("/data/weights/" in name or "/data/constants/" in name) and name.endswith(".pt"):
                raise ModelLoadError(f"{path} stores pickled weights ({name}). {_PICKLE_HINT}")
            if "/data/sample_inputs/" in name:
                payload = b""  # an empty payload deserialises to no sample inputs, without unpickling
            clean.writestr(archive.getinfo(name), payload)
    return out.getvalue()


def _refuse_pickled_entries(path: Path, name: str, payload: bytes) -> None:
    try:
        config = json.loads(payload).get("config", {})
    except (ValueError, AttributeError) as e:
        raise ModelLoadError(f"{path} is corrupt: {name} is not valid JSON ({e})") from None
    for key, meta in config.items():
        path_name = str(meta.get("path_name", "")) if isinstance(meta, dict) else ""
        if not isinstance(meta, dict) or meta.get("use_pickle") or path_name.startswith(("custom_obj", "opaque_obj")):
            raise ModelLoadError(f"{path} stores {key!r} as a pickled object. {_PICKLE_HINT}")


def _placeholder_inputs(program) -> tuple[torch.Tensor, ...] | None:
    """Zero tensors shaped like the program's user inputs (their metadata survives without sample inputs)."""
    specs = [s for s in program.graph_signature.input_specs if s.kind.name == "USER_INPUT"]
    nodes = {n.name: n for n in program.graph.nodes if n.op == "placeholder"}
    inputs = []
    for spec in specs:
        val = nodes.get(spec.arg.name).meta.get("val") if spec.arg.name in nodes else None
        if val is None or not hasattr(val, "shape"):
            return None
        shape = tuple(d if isinstance(d, int) else 1 for d in val.shape)  # a symbolic (dynamic) dim → 1
        inputs.append(torch.zeros(shape, dtype=val.dtype))
    return tuple(inputs)
