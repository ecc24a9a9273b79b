"""Atomic output: every file edgecompress writes appears under its final name whole or not at all."""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def temp_beside(path: str | os.PathLike[str]) -> Iterator[Path]:
    """A new empty file beside ``path`` (mode 0600, mkstemp's), removed on exit unless it was renamed away."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
    finally:
        if tmp.exists():
            tmp.unlink()


def give_plain_mode(path: Path) -> None:
    """The permissions a plain open() would have given ``path`` (0666 less the umask)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path`` (atomic on one file
    system), on failure it is removed and ``path`` is left as it was."""
    with temp_beside(path) as tmp:
        yield tmp
        if tmp.exists():  # mkstemp creates 0600; give the file the permissions a plain open() would
            give_plain_mode(tmp)
        os.replace(tmp, path)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    return Path(path)


def strict_json(obj: Any) -> Any:
    """``obj`` with non-finite floats as the strings "inf", "-inf", "nan": JSON has no such numbers, and
    Python's ``Infinity`` breaks strict parsers (an SQNR of two identical outputs is infinite)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return "nan" if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    if isinstance(obj, dict):
        return {k: strict_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict_json(v) for v in obj]
    return obj


def json_bytes(obj: Any) -> bytes:
    """The bytes write_json_atomic writes for ``obj`` (so that a hash of them names the same file)."""
    return (json.dumps(strict_json(obj), indent=2, allow_nan=False, default=str) + "\n").encode()


def write_json_atomic(path: str | os.PathLike[str], obj: Any) -> Path:
    return atomic_write_bytes(path, json_bytes(obj))
