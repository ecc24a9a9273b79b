"""Everything a user can hand us as data (a spec string, an .npz file, a function, an iterable of batches)
turned into a Dataset, with errors that name the source, what was found and what is expected."""

from __future__ import annotations

import importlib
import os
import re
import struct
import zipfile
import zlib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import DataError, EdgeCompressError
from .base import Dataset
from .builtin import BUILTIN_DATASETS

KEYS = ("x_train", "y_train", "x_test", "y_test")
HOLDOUT_FRACTION = 0.2
_HOLDOUT_SEED = 0
_FUNCTION_SPEC = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")
_EXPECTED_KEYS = "x_train, y_train, x_test, y_test (labels optional: both or neither)"
# What numpy and zipfile raise on a damaged archive (a bad header, an unknown compression method or zip
# version, a corrupt deflate stream, an "encrypted" flag, a header that promises more bytes than the file holds).
_ARCHIVE_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile, NotImplementedError, RuntimeError, zlib.error,
                   struct.error, OverflowError, MemoryError)


def load_dataset(spec: str | os.PathLike[str]) -> Dataset:
    """``builtin:mnist1d`` | ``builtin:digits`` | a path to an ``.npz`` | ``package.module:function``."""
    try:
        text = os.fspath(spec)
    except TypeError:
        raise DataError(f"cannot load data from a {type(spec).__name__}; expected {_accepted_forms()}") from None
    if not isinstance(text, str):
        raise DataError(f"cannot load data from the bytes path {text!r}; pass it as str")
    if text.startswith("builtin:"):
        name = text.removeprefix("builtin:")
        if name not in BUILTIN_DATASETS:
            raise DataError(f"unknown builtin data set {text!r}; available: "
                            f"{', '.join('builtin:' + n for n in BUILTIN_DATASETS)}")
        return BUILTIN_DATASETS[name]()
    path = Path(text)
    if not isinstance(spec, str) or path.suffix == ".npz" or path.is_file():
        return _from_npz(path)
    if _FUNCTION_SPEC.fullmatch(text):
        return _from_function(text)
    raise DataError(f"cannot load data {text!r}: expected {_accepted_forms()}")


def as_dataset(data: Any, *, eval_data: Any = None, name: str = "data") -> Dataset:
    """A Dataset from what the Python API accepts: a Dataset, a spec for ``load_dataset``, or an iterable of
    ``(inputs, labels)`` / ``inputs`` batches. Batches are concatenated; ``eval_data`` (batches too) becomes
    the test split, otherwise a seeded 20 % of the samples is held out."""
    if isinstance(data, Dataset | str | os.PathLike):
        if eval_data is not None:
            raise DataError("eval_data goes with an iterable of batches; a Dataset or a data spec already has "
                            "its own test split")
        return data if isinstance(data, Dataset) else load_dataset(data)
    if isinstance(eval_data, Dataset | str | os.PathLike):
        raise DataError(f"eval_data must be an iterable of batches like data, got {type(eval_data).__name__}; "
                        "to evaluate on a data set's test split, pass that Dataset or spec as data")
    x, y = _materialise(name, data)
    if eval_data is None:
        x_train, y_train, x_test, y_test = _hold_out(name, x, y)
    else:
        x_train, y_train = x, y
        x_test, y_test = _materialise(f"{name} (eval_data)", eval_data)
        if (y_train is None) != (y_test is None):
            raise DataError(f"{name}: data is {'un' if y_train is None else ''}labelled but eval_data is "
                            f"{'un' if y_test is None else ''}labelled; give labels for both or for neither")
    return Dataset(name, x_train, y_train, x_test, y_test, _num_classes(y_train, y_test))


def dataset_from_arrays(name: str, x_train: Any, y_train: Any, x_test: Any, y_test: Any) -> Dataset:
    """A Dataset from numpy arrays or tensors: inputs cast to float32, labels checked to be class indices."""
    if (y_train is None) != (y_test is None):
        found, missing = ("y_train", "y_test") if y_test is None else ("y_test", "y_train")
        raise DataError(f"{name}: found {found} but no {missing}; give labels for both splits or for neither")
    xs = {split: _inputs(name, f"x_{split}", _to_array(name, f"x_{split}", x))
          for split, x in (("train", x_train), ("test", x_test))}
    ys = {split: None if y is None else _labels(name, f"y_{split}", _to_array(name, f"y_{split}", y),
                                                xs[split].shape[0])
          for split, y in (("train", y_train), ("test", y_test))}
    return Dataset(name, xs["train"], ys["train"], xs["test"], ys["test"], _num_classes(ys["train"], ys["test"]))


def _accepted_forms() -> str:
    builtins = ", ".join(f"'builtin:{n}'" for n in BUILTIN_DATASETS)
    return (f"{builtins}, a path to an .npz file with keys {_EXPECTED_KEYS}, or 'package.module:function' "
            "returning a Dataset, a mapping with those keys, or a tuple (x_train, y_train, x_test, y_test)")


def _from_npz(path: Path) -> Dataset:
    source = str(path)
    if not path.is_file():
        raise DataError(f"data file {source} does not exist; expected an .npz file with keys {_EXPECTED_KEYS}")
    if not zipfile.is_zipfile(path):
        with open(path, "rb") as f:
            head = f.read(8)
        raise DataError(f"{source} is not an .npz archive (it starts with {head!r}, not a zip header); expected "
                        f"a file written by numpy.savez with keys {_EXPECTED_KEYS}")
    try:
        archive = np.load(path, allow_pickle=False)
    except _ARCHIVE_ERRORS as e:
        raise DataError(f"{source} cannot be read as an .npz archive: {e}") from None
    with archive:
        _check_keys(source, archive.files)
        arrays = {key: _read_entry(source, archive, key) for key in archive.files}
    return dataset_from_arrays(source, *(arrays.get(key) for key in KEYS))


def _read_entry(source: str, archive: Any, key: str) -> np.ndarray:
    try:
        value = archive[key]
    except ValueError as e:
        if "allow_pickle" in str(e):
            raise DataError(f"{source}: {key} is an array of Python objects, which would have to be unpickled "
                            "(refused: unpickling can run code); expected a numeric array") from None
        raise DataError(f"{source}: entry {key} is not a valid .npy array: {e}") from None
    except _ARCHIVE_ERRORS as e:
        raise DataError(f"{source}: entry {key} is corrupt: {e}") from None
    if not isinstance(value, np.ndarray):  # numpy hands back the raw bytes of a member that is not .npy
        raise DataError(f"{source}: entry {key} is not a valid .npy array; expected a file written by numpy.savez")
    return value


def _check_keys(source: str, found: Iterable[str]) -> None:
    found = sorted(found)
    missing = [k for k in ("x_train", "x_test") if k not in found]
    unexpected = [k for k in found if k not in KEYS]
    if missing or unexpected:
        problems = ([f"missing {', '.join(missing)}"] if missing else []) + (
            [f"unexpected {', '.join(unexpected)}"] if unexpected else [])
        raise DataError(f"{source}: found keys [{', '.join(found)}] ({'; '.join(problems)}); expected "
                        f"{_EXPECTED_KEYS}")


def _from_function(spec: str) -> Dataset:
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise DataError(f"cannot import the data module of {spec!r}: {e}") from None
    function = getattr(module, attr, None)
    if function is None:
        raise DataError(f"cannot load data {spec!r}: module {module_name!r} has no attribute {attr!r}")
    if not callable(function):
        raise DataError(f"cannot load data {spec!r}: {attr!r} is a {type(function).__name__}, not a function")
    try:
        result = function()
    except EdgeCompressError:
        raise
    except Exception as e:  # user code can raise anything; report it as a data error naming the spec
        raise DataError(f"data function {spec!r} raised {type(e).__name__}: {e}") from None
    if isinstance(result, Dataset):
        return result
    if isinstance(result, Mapping):
        _check_keys(spec, (str(k) for k in result))
        return dataset_from_arrays(spec, *(result.get(key) for key in KEYS))
    if isinstance(result, tuple | list) and len(result) == 4:
        return dataset_from_arrays(spec, *result)
    raise DataError(f"data function {spec!r} returned {_describe(result)}; expected a Dataset, a mapping with keys "
                    f"{_EXPECTED_KEYS}, or a tuple (x_train, y_train, x_test, y_test)")


def _materialise(source: str, batches: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Concatenate an iterable of ``(inputs, labels)`` or ``inputs`` batches into two tensors."""
    if batches is None:
        raise DataError(f"{source}: no data given; expected a Dataset, a data spec or an iterable of batches")
    if isinstance(batches, torch.Tensor | np.ndarray):
        raise DataError(f"{source}: got a single {type(batches).__name__} of shape {tuple(batches.shape)}; expected "
                        "an iterable of batches, e.g. [x] (inputs only) or [(x, y)]")
    try:
        iterator = iter(batches)
    except TypeError:
        raise DataError(f"{source}: a {type(batches).__name__} is not an iterable of batches; expected "
                        "(inputs, labels) or inputs batches of tensors or numpy arrays") from None
    xs: list[torch.Tensor] = []
    ys: list[torch.Tensor] = []
    for i, batch in enumerate(iterator):
        if isinstance(batch, tuple | list):
            if len(batch) != 2:
                raise DataError(f"{source}: batch {i} is a {type(batch).__name__} of {len(batch)} items; expected "
                                "(inputs, labels) or inputs alone")
            inputs, labels = batch
        else:
            inputs, labels = batch, None
        x = _inputs(source, f"batch {i} inputs", _to_array(source, f"batch {i} inputs", inputs))
        if xs and (labels is not None) != bool(ys):
            raise DataError(f"{source}: batch {i} {'has' if labels is not None else 'has no'} labels but batch 0 "
                            f"{'has' if ys else 'has none'}; give labels with every batch or with none")
        if xs and x.shape[1:] != xs[0].shape[1:]:
            raise DataError(f"{source}: batch {i} has samples of shape {tuple(x.shape[1:])} but batch 0 has "
                            f"{tuple(xs[0].shape[1:])}; every sample must have the same shape")
        xs.append(x)
        if labels is not None:
            ys.append(_labels(source, f"batch {i} labels", _to_array(source, f"batch {i} labels", labels),
                              x.shape[0]))
    if not xs:
        raise DataError(f"{source}: the iterable yielded no batches; expected at least one batch of samples")
    return torch.cat(xs), (torch.cat(ys) if ys else None)


def _hold_out(source: str, x: torch.Tensor, y: torch.Tensor | None
              ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor | None]:
    n = x.shape[0]
    if n < 2:
        raise DataError(f"{source}: {n} sample cannot be split into train and test; give at least 2 samples "
                        "or pass eval_data")
    n_test = max(1, round(n * HOLDOUT_FRACTION))
    order = torch.randperm(n, generator=torch.Generator().manual_seed(_HOLDOUT_SEED))
    test, train = order[:n_test], order[n_test:]
    return x[train], None if y is None else y[train], x[test], None if y is None else y[test]


def _to_array(source: str, what: str, value: Any) -> np.ndarray:
    if isinstance(value, np.ndarray):
        return value
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        # numpy has no bfloat16; widen low-precision floats (inputs become float32 anyway)
        return (value.float() if value.is_floating_point() and value.dtype != torch.float64 else value).numpy()
    raise DataError(f"{source}: {what} is {_describe(value)}; expected a numpy array or a torch tensor")


def _inputs(source: str, what: str, arr: np.ndarray) -> torch.Tensor:
    if arr.dtype.kind not in "biuf":
        raise DataError(f"{source}: {what} has dtype {arr.dtype}; expected real numbers (cast to float32)")
    if arr.ndim < 2:
        raise DataError(f"{source}: {what} has shape {arr.shape}; expected (N, ...): a sample dimension "
                        "followed by at least one feature dimension")
    if arr.shape[0] == 0:
        raise DataError(f"{source}: {what} has shape {arr.shape}: no samples; expected at least one")
    with np.errstate(over="ignore"):  # values beyond float32 become Inf and are reported just below
        x = arr.astype(np.float32)
    bad = int(np.size(x) - np.count_nonzero(np.isfinite(x)))
    if bad:
        raise DataError(f"{source}: {what} contains {bad} NaN or Inf values (after conversion to float32); "
                        "expected finite numbers")
    return torch.from_numpy(x)


def _labels(source: str, what: str, arr: np.ndarray, n: int) -> torch.Tensor:
    if arr.ndim != 1 or arr.shape[0] != n:
        raise DataError(f"{source}: {what} has shape {arr.shape}; expected ({n},), one class index per sample")
    if arr.dtype.kind == "f":
        integral = np.isfinite(arr) & (arr == np.round(arr))
        if not integral.all():
            raise DataError(f"{source}: {what} holds non-integer values (e.g. {arr[~integral][0]!r}); expected "
                            "integer class indices")
    elif arr.dtype.kind not in "biu":
        raise DataError(f"{source}: {what} has dtype {arr.dtype}; expected integer class indices")
    y = arr.astype(np.int64)
    if y.size and y.min() < 0:
        raise DataError(f"{source}: {what} contains the negative label {int(y.min())}; expected class indices "
                        "0, 1, 2, ...")
    return torch.from_numpy(y)


def _num_classes(y_train: torch.Tensor | None, y_test: torch.Tensor | None) -> int | None:
    if y_train is None or y_test is None:
        return None
    return int(max(y_train.max().item() if y_train.numel() else -1,
                   y_test.max().item() if y_test.numel() else -1)) + 1


def _describe(value: Any) -> str:
    if isinstance(value, tuple | list):
        return f"a {type(value).__name__} of {len(value)} items"
    return f"a {type(value).__name__}"
