"""S5 safe loading: recognise a model file by its content (not only its suffix) and read pickle-based files,
when the user trusts them, without ever letting the pickle call a function.

``--trust-pickle`` does not mean full unpickling. The file is read by torch's weights-only unpickler, which
builds tensors and plain containers only; for a whole pickled ``nn.Module`` the classes the file names are
imported and allowed when, and only when, they are ``nn.Module`` subclasses. Any other global the pickle
names (``os.system``, ``builtins.eval``, ``subprocess.Popen`` …) is refused before unpickling starts, so a
hostile pickle never runs, with or without the flag. What the flag does allow is importing the installed
modules that define those classes, as ``package.module:factory`` does."""

from __future__ import annotations

import contextlib
import importlib
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path

from ..errors import ModelLoadError, UnsupportedError

PICKLE_SUFFIXES = frozenset({".pt", ".pth", ".pkl", ".pickle", ".bin", ".ckpt", ".joblib"})
PICKLE_HINT = (
    "edgecompress does not unpickle model files by default, because unpickling can run arbitrary code. Save the "
    "weights with safetensors instead (in an environment you trust: "
    "`safetensors.torch.save_file(model.state_dict(), 'model.safetensors')`) or export a .pt2 with "
    "torch.export.save; or, if you trust where the file comes from, pass --trust-pickle (trust_pickle=True), which "
    "reads it with torch's weights-only unpickler and never lets it call a function")
_UNSUPPORTED_GLOBAL = re.compile(r"Unsupported global: GLOBAL ([\w.]+)")
_WEIGHTS_ONLY_DETAIL = re.compile(r"WeightsUnpickler error:\s*(\S[^\n]*)")


def file_kind(path: Path) -> str:
    """"pt2" | "pickle" | "torchscript" | "safetensors" | "onnx" | "unknown", from the first bytes and, for
    zip archives, the names inside; the suffix decides only when the content does not."""
    with open(path, "rb") as f:
        head = f.read(9)
    if head[:2] == b"PK":
        kind = _zip_kind(path)
        if kind is not None:
            return kind
    elif head[:1] == b"\x80":  # PROTO opcode: every pickle of protocol 2 or later, legacy torch.save included
        return "pickle"
    elif _looks_like_safetensors(path, head):
        return "safetensors"
    suffix = path.suffix.lower()
    if suffix in PICKLE_SUFFIXES:
        return "pickle"
    return {".pt2": "pt2", ".safetensors": "safetensors", ".onnx": "onnx"}.get(suffix, "unknown")


def _zip_kind(path: Path) -> str | None:
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except Exception:  # any damage: the archive is not recognised, and the caller's loader reports it
        return None
    if any("/models/" in n and n.endswith(".json") for n in names):
        return "pt2"
    if any(n.endswith("/constants.pkl") for n in names) and any("/code/" in n for n in names):
        return "torchscript"
    if any(n == "data.pkl" or n.endswith("/data.pkl") for n in names):
        return "pickle"  # torch.save's zip format: a pickle plus raw storages
    return None


def _looks_like_safetensors(path: Path, head: bytes) -> bool:
    if len(head) < 9 or head[8:9] != b"{":
        return False
    header_len = int.from_bytes(head[:8], "little")
    return 0 < header_len and 8 + header_len <= path.stat().st_size


def refuse_pickle(path: Path) -> ModelLoadError:
    """The error for a pickle-based file given without --trust-pickle."""
    return ModelLoadError(f"{path} is a pickle-based file (torch.save or pickle, by its content or its suffix). "
                          f"{PICKLE_HINT}")


def refuse_torchscript(path: Path) -> UnsupportedError:
    return UnsupportedError(f"{path} is a TorchScript archive; edgecompress does not load TorchScript (it carries "
                            "code and pickles). Give the model as a torch.export .pt2 (torch.export.save), or as "
                            "package.module:factory with .safetensors weights")


def load_trusted_module(path: Path):
    """A whole ``nn.Module`` saved with ``torch.save(model)``, read with the weights-only unpickler plus the
    ``nn.Module`` classes the file names. Only for files the user said they trust (--trust-pickle)."""
    import torch
    from torch import nn

    allowed = _module_classes(path)
    obj = _weights_only_load(path, allowed)
    if isinstance(obj, nn.Module):
        try:  # a damaged pickle can rebuild a module without the attributes every nn.Module has
            obj.state_dict()
            list(obj.named_modules())
        except Exception as e:
            raise ModelLoadError(f"{path} is damaged: the model it holds is incomplete ({type(e).__name__}: "
                                 f"{_first_line(e)})") from None
        return obj
    if isinstance(obj, Mapping):
        raise ModelLoadError(f"{path} holds a dict ({len(obj)} entries, e.g. a state dict), not a model: it has no "
                             "architecture. Give the architecture as package.module:factory and this file with "
                             "--weights (and --trust-pickle)")
    raise ModelLoadError(f"{path} holds a {type(obj).__name__}, not a torch.nn.Module"
                         + (" (a bare tensor)" if isinstance(obj, torch.Tensor) else ""))


def load_trusted_state(path: Path) -> dict:
    """A state dict saved with ``torch.save(model.state_dict())``, read with the weights-only unpickler (a state
    dict never needs more, so no class is allowed beyond torch's own list)."""
    import torch

    obj = _weights_only_load(path, [])
    if isinstance(obj, Mapping) and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
        return dict(obj)
    raise ModelLoadError(f"{path} holds a {type(obj).__name__} that is not a state dict (a mapping of names to "
                         "tensors); give the weights as model.state_dict() saved with safetensors or torch.save")


def _module_classes(path: Path) -> list[type]:
    """The classes the pickle names beyond torch's weights-only list, each imported and checked to be an
    ``nn.Module`` subclass; any other global refuses the file before a byte is unpickled."""
    import torch
    from torch import nn

    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    except ValueError:
        return []  # not torch.save's zip format: the weights-only unpickler alone decides (and names the global)
    except Exception as e:  # a damaged archive: torch's zip reader raises RuntimeError and others
        raise ModelLoadError(f"{path} is a damaged torch.save archive: {type(e).__name__}: {_first_line(e)}") from None
    allowed, refused = [], []
    for name in sorted(names):
        obj = _import_global(name)
        if isinstance(obj, type) and issubclass(obj, nn.Module):
            allowed.append(obj)
        else:
            refused.append(name)
    if refused:
        raise ModelLoadError(f"{path} refers to {', '.join(refused)}, which {'is' if len(refused) == 1 else 'are'} "
                             "not an nn.Module class importable here; even with --trust-pickle edgecompress rebuilds "
                             "only tensors, plain containers and nn.Module classes, so nothing in the file is called. "
                             "Export the model with torch.export.save (.pt2) or save its weights with safetensors")
    return allowed


def _import_global(name: str):
    module_name, _, attr = name.rpartition(".")
    if not module_name:
        return None
    try:
        return getattr(importlib.import_module(module_name), attr, None)
    except Exception:  # a module that is missing or fails to import is simply not an allowed class
        return None


def _weights_only_load(path: Path, allowed: list[type]):
    import pickle
    import warnings

    import torch

    try:
        with torch.serialization.safe_globals(allowed), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns about pickle protocols it may not support; we report
            return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = _UNSUPPORTED_GLOBAL.search(str(e))
        names = [found.group(1)] if found else [n for n in _pickle_globals(path) if not n.startswith("torch.")]
        detail = _WEIGHTS_ONLY_DETAIL.search(str(e))
        what = (f"refers to {', '.join(names[:5])}" if names else
                f"holds what it does not build ({detail.group(1).strip() if detail else _first_line(e)})")
        raise ModelLoadError(f"{path} {what}; the weights-only unpickler refuses it (it builds only tensors, "
                             "containers and allowed nn.Module classes, and calls nothing). Export the model with "
                             "torch.export.save (.pt2) or save its weights with safetensors") from None
    except Exception as e:  # a damaged file can fail anywhere inside torch.load
        raise ModelLoadError(f"{path} could not be read as a torch.save file: {type(e).__name__}: "
                             f"{_first_line(e)}") from None


def _pickle_globals(path: Path) -> list[str]:
    """The globals a plain pickle names, found by reading its opcodes (pickletools: nothing is executed); for
    the error message only, since the weights-only unpickler is what refuses them."""
    import pickletools

    found, memo, strings = [], {}, []
    memo_count, last = 0, None
    # a damaged pickle: report what was found before the damage
    with contextlib.suppress(Exception), open(path, "rb") as f:
        for op, arg, _ in pickletools.genops(f):
            name, pushed = op.name, None
            if "UNICODE" in name or name in ("STRING", "BINSTRING", "SHORT_BINSTRING"):
                pushed = str(arg)
            elif name == "MEMOIZE":
                memo[memo_count], memo_count = last, memo_count + 1
            elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
                memo[arg] = last
            elif name in ("GET", "BINGET", "LONG_BINGET"):
                pushed = memo.get(arg)
            elif name == "GLOBAL":
                found.append(str(arg).replace(" ", "."))
            elif name == "STACK_GLOBAL" and len(strings) >= 2 and None not in strings[-2:]:
                found.append(f"{strings[-2]}.{strings[-1]}")
            if name not in ("MEMOIZE", "PUT", "BINPUT", "LONG_BINPUT", "FRAME"):
                strings.append(pushed)
                last = pushed
    return list(dict.fromkeys(found))


def check_onnx(path: Path) -> UnsupportedError:
    """Parse and check an ONNX file with the onnx package only (never run), and return the error that explains
    what to give instead: the pipeline compresses a PyTorch module, and ONNX → PyTorch conversion would need
    another dependency."""
    import onnx

    try:
        model = onnx.load_model(str(path), load_external_data=False)
        onnx.checker.check_model(model)
    except Exception as e:  # protobuf's DecodeError, onnx's ValidationError, and others for damaged files
        raise ModelLoadError(f"{path} is not a valid ONNX model: {type(e).__name__}: {_first_line(e)}") from None
    opsets = ", ".join(f"{o.domain or 'ai.onnx'} {o.version}" for o in model.opset_import) or "none"
    inputs = ", ".join(i.name for i in model.graph.input) or "none"
    return UnsupportedError(f"{path} is an ONNX model (opsets: {opsets}; inputs: {inputs}); edgecompress "
                            "compresses PyTorch models and does not convert ONNX back to PyTorch. Give the model as "
                            "a torch.export .pt2 (torch.export.save), or as package.module:factory with .safetensors "
                            "weights")


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return (text[0] if text else "no details")[:300]
