"""Model input without code execution from files (S5): reference models by name, a factory in an importable
module plus safetensors weights, or a torch.export ``.pt2`` archive checked for pickled payloads. Files are
recognised by content; pickle-based ones are refused unless the user trusts them (see security.safe_loading),
ONNX files are checked with onnx and refused with what to give instead, and every loaded model is checked
for NaN/Inf weights."""

from __future__ import annotations

import importlib
import io
import json
import logging
import re
import struct
import warnings
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .errors import DataError, ModelLoadError
from .lifting import lift_layers
from .security.safe_loading import (
    check_onnx,
    file_kind,
    load_trusted_module,
    load_trusted_state,
    refuse_pickle,
    refuse_torchscript,
)

# A .pt2 with pickled entries is refused even with --trust-pickle: torch.export.load would fully unpickle them.
_PICKLE_HINT = (
    "edgecompress does not unpickle model files, because unpickling can run arbitrary code. Save the weights "
    "with safetensors instead (in an environment you trust: "
    "`safetensors.torch.save_file(model.state_dict(), 'model.safetensors')`) or export a .pt2 with "
    "torch.export.save without pickled constants")
# What zipfile raises on a damaged archive: bad headers, an unknown compression method or zip version, a corrupt
# deflate stream, a bad CRC, a member that promises more bytes than the file holds.
_ZIP_ERRORS = (zipfile.BadZipFile, OSError, ValueError, EOFError, RuntimeError, NotImplementedError, zlib.error,
               struct.error, OverflowError)
# The members torch.export.save writes, under the archive's one top-level folder; nothing else is accepted.
_PT2_MEMBER = re.compile(r"[^/]+/(models/[^/]+\.json|data/(weights|constants|sample_inputs)/[^/]+|extra/.+|"
                         r"archive_format|archive_version|byteorder|\.data/(version|serialization_id))")
_FILE_SUFFIXES = frozenset({".pt2", ".onnx", ".safetensors", ".pt", ".pth", ".pkl", ".pickle", ".bin", ".ckpt"})


@dataclass
class LoadedModel:
    model: nn.Module
    example_inputs: tuple[torch.Tensor, ...] | None
    source: str
    dataset: str | None = None  # the builtin data set a reference model was trained on


def load_model(spec: str, *, weights: str | Path | None = None, progress=None,
               trust_pickle: bool = False) -> LoadedModel:
    """``builtin:NAME`` | ``package.module:factory`` (+ ``weights`` .safetensors) | ``path/model.pt2``.
    ``trust_pickle``: also accept a pickle-based file (a whole model, or ``weights``), read without letting it
    call any function (security.safe_loading). The model's floating-point weights must be finite."""
    if not isinstance(spec, str) or not spec:
        raise ModelLoadError(f"a model is given as a non-empty string, got {spec!r}: 'builtin:NAME', "
                             "'package.module:factory' or a path to a torch.export .pt2 file")
    if spec.startswith("builtin:"):
        if weights is not None:
            raise ModelLoadError("--weights goes with a module:factory model, not with a builtin model")
        loaded = _load_builtin(spec.removeprefix("builtin:"), progress)
    elif Path(spec).suffix.lower() in _FILE_SUFFIXES or _is_file(Path(spec)):
        if weights is not None:
            raise ModelLoadError(f"--weights goes with a module:factory model; the file {spec} is the model")
        loaded = _load_file(Path(spec), trust_pickle)
    elif ":" in spec:
        loaded = _load_factory(spec, weights, trust_pickle)
    else:
        raise ModelLoadError(f"cannot load model {spec!r}: expected 'builtin:NAME', 'package.module:factory' or a "
                             "path to a torch.export .pt2 file")
    check_finite_weights(loaded.model, loaded.source if weights is None else f"{loaded.source} with {weights}")
    return loaded


def check_output_folder(out_dir: str | Path, spec: str, weights: str | Path | None = None) -> None:
    """ModelLoadError when the model file or the weights file lies in ``out_dir``: a run writes its artifacts
    there (model.*, baseline.*, report.json …) and must never be able to overwrite or mix with its input."""
    out = Path(out_dir).resolve()
    for given in (spec, weights):
        path = Path(given) if given is not None else None
        if path is not None and _is_file(path) and path.resolve().parent == out:
            raise ModelLoadError(f"the output folder {out_dir} holds the input {path.name}; a run writes its files "
                                 "there, so write to another folder (--out) and the input is never touched")


def check_finite_weights(model: nn.Module, source: str) -> None:
    """DataError naming each floating-point parameter or buffer that holds NaN or Inf values."""
    bad = [(name, int((~torch.isfinite(t)).sum())) for name, t in model.state_dict().items()
           if t.is_floating_point() and not torch.isfinite(t).all()]
    if bad:
        listed = ", ".join(f"{name} ({n} values)" for name, n in bad[:8])
        raise DataError(f"{source}: the model's weights contain NaN or Inf in {listed}"
                        f"{' and more' if len(bad) > 8 else ''}; expected finite numbers (was it trained to "
                        "divergence, or the file damaged?)")


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except (OSError, ValueError):  # a name too long for the file system, or with a NUL byte
        return False


def _load_file(path: Path, trust_pickle: bool) -> LoadedModel:
    if not _is_file(path):
        raise ModelLoadError(f"model file {path} does not exist" + (" (it is a directory)" if path.is_dir() else ""))
    try:
        kind = file_kind(path)
    except OSError as e:
        raise ModelLoadError(f"cannot read model file {path}: {e.strerror or e}") from None
    if kind == "pt2":
        return _load_pt2(path)
    if kind == "pickle":
        if not trust_pickle:
            raise refuse_pickle(path)
        model = load_trusted_module(path)
        return LoadedModel(model.eval(), _own_example_inputs(model), str(path))
    if kind == "torchscript":
        raise refuse_torchscript(path)
    if kind == "safetensors":
        raise ModelLoadError(f"{path} is a safetensors file: weights without an architecture. Give the architecture "
                             "as package.module:factory and pass this file with --weights")
    if kind == "onnx":
        raise check_onnx(path)
    raise ModelLoadError(f"{path} is not a model file edgecompress reads: expected a torch.export .pt2 archive "
                         "(or 'builtin:NAME', or 'package.module:factory' with --weights model.safetensors)")


def _load_builtin(name: str, progress) -> LoadedModel:
    from .models import REFERENCE_MODELS, pretrained

    if name not in REFERENCE_MODELS:
        raise ModelLoadError(f"unknown builtin model {name!r}; available: {', '.join(REFERENCE_MODELS)}")
    model = pretrained(name, progress=progress)
    return LoadedModel(model, model.example_inputs(), f"builtin:{name}", REFERENCE_MODELS[name].dataset)


def _load_factory(spec: str, weights: str | Path | None, trust_pickle: bool = False) -> LoadedModel:
    module_name, _, attr = spec.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError, TypeError) as e:
        raise ModelLoadError(f"cannot import model factory {spec!r}: {e}") from None
    try:
        model = factory()
    except Exception as e:
        raise ModelLoadError(f"model factory {spec!r} raised {type(e).__name__}: {e}") from None
    if not isinstance(model, nn.Module):
        raise ModelLoadError(f"model factory {spec!r} returned {type(model).__name__}, not a torch.nn.Module")
    if weights is not None:
        load_safetensors_into(model, Path(weights), trust_pickle=trust_pickle)
    return LoadedModel(model.eval(), _own_example_inputs(model), spec)


def _own_example_inputs(model: nn.Module) -> tuple[torch.Tensor, ...] | None:
    return model.example_inputs() if callable(getattr(model, "example_inputs", None)) else None


def load_safetensors_into(model: nn.Module, path: Path, *, trust_pickle: bool = False) -> None:
    """Load ``path`` (safetensors; a torch.save state dict too when ``trust_pickle``) into ``model``."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if trust_pickle and _is_file(path) and file_kind(path) == "pickle":
        state = load_trusted_state(path)
    else:
        _refuse_non_safetensors(path)
        try:
            state = load_file(str(path))
        except (SafetensorError, OSError, ValueError, RuntimeError) as e:
            raise ModelLoadError(f"{path} is not a valid safetensors file: {e}") from None
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as e:  # a tensor of the wrong shape
        raise ModelLoadError(f"weights in {path} do not fit the model: {' '.join(str(e).split())[:500]}") from None
    missing, unexpected = list(result.missing_keys), list(result.unexpected_keys)
    if missing or unexpected:
        raise ModelLoadError(f"weights in {path} do not fit the model: missing {missing[:8]}, "
                             f"unexpected {unexpected[:8]}")


def _refuse_non_safetensors(path: Path) -> None:
    if not _is_file(path):
        raise ModelLoadError(f"weights file {path} does not exist")
    with open(path, "rb") as f:
        head = f.read(9)
    size = path.stat().st_size
    if file_kind(path) == "pickle":
        raise refuse_pickle(path)
    header_len = int.from_bytes(head[:8], "little") if len(head) >= 8 else -1
    if len(head) < 9 or header_len <= 0 or 8 + header_len > size or head[8:9] != b"{":
        raise ModelLoadError(f"{path} is not a safetensors file (bad or truncated header)")


def _load_pt2(path: Path) -> LoadedModel:
    if not path.is_file():
        raise ModelLoadError(f"model file {path} does not exist")
    data = _sanitised_pt2(path)
    try:
        with _quiet_torch_export():
            program = torch.export.load(io.BytesIO(data))
            module = lift_layers(program.module())
    except Exception as e:
        raise ModelLoadError(f"{path} could not be loaded as a torch.export program: {type(e).__name__}: {e}") from None
    return LoadedModel(module, _placeholder_inputs(program), str(path))


@contextmanager
def _quiet_torch_export() -> Iterator[None]:
    """torch.export.load logs the traceback of a failed deserialisation before it raises; our ModelLoadError
    reports the failure, so the user sees one message, not a traceback from inside torch."""
    loggers = [logging.getLogger(name) for name in ("torch.export", "torch._export")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def _sanitised_pt2(path: Path) -> bytes:
    """The archive's bytes with the pickled sample inputs blanked, after refusing any archive whose weights or
    constants are pickled (torch.export.load would unpickle those, falling back to full pickle)."""
    try:
        archive = zipfile.ZipFile(path)
    except _ZIP_ERRORS as e:
        raise ModelLoadError(f"{path} is not a torch.export .pt2 archive: {e}") from None
    out = io.BytesIO()
    with archive, zipfile.ZipFile(out, "w") as clean:
        names = archive.namelist()
        if not any("/models/" in n and n.endswith(".json") for n in names):
            raise ModelLoadError(f"{path} has no exported program in it (not a torch.export.save archive)")
        unexpected = [n for n in names if not _PT2_MEMBER.fullmatch(n)]
        if unexpected:  # e.g. a top-level `version` + `serialized_state_dict.pt` sends torch.export.load, when
            # the current format fails, down a legacy path that unpickles with weights_only=False
            raise ModelLoadError(f"{path} holds {unexpected[0]!r}, which a torch.export.save archive does not; "
                                 "refused, as extra members can make torch.export.load unpickle them")
        for name in names:
            try:
                payload = archive.read(name)
            except _ZIP_ERRORS as e:
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
