"""The manifest of an output folder: SHA-256 and size of every file, so that any changed byte, missing file
or extra file is found before the folder is trusted."""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

from .. import __version__
from ..errors import IntegrityError
from ..fileio import atomic_write_bytes

MANIFEST_NAME = "manifest.json"
SIGNATURE_NAME = "manifest.sig"
MANIFEST_SCHEMA = "edgecompress.manifest/1"
_RESERVED = frozenset({MANIFEST_NAME, SIGNATURE_NAME})  # never listed: the manifest cannot hash itself
_SHA256 = re.compile(r"[0-9a-f]{64}")
_CHUNK = 1 << 20


def canonical_json(obj: Any) -> bytes:
    """One byte string per JSON value (sorted keys, no spaces, UTF-8), the form that is hashed and signed."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def sha256_file(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_CHUNK):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class FileDigest:
    sha256: str
    size: int


@dataclass(frozen=True)
class Manifest:
    """A parsed manifest and the exact bytes it was read from (the bytes are what a signature covers)."""

    files: Mapping[str, FileDigest]
    created: str
    edgecompress_version: str
    data: bytes

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


def _check_relative(name: object) -> str:
    """``name`` if it is a safe relative POSIX path inside the folder; anything that could point elsewhere
    ('..', absolute, backslashes, empty or '.' parts) is refused."""
    if not isinstance(name, str) or not name:
        raise IntegrityError(f"manifest entry {name!r} is not a file path; expected a relative path such as "
                             "'model.onnx'")
    parts = name.split("/")
    if (name.startswith("/") or "\\" in name or "\x00" in name or re.match(r"[A-Za-z]:", name)
            or any(p in ("", ".", "..") for p in parts)):
        raise IntegrityError(f"manifest entry {name!r} is not allowed: entries are relative paths inside the "
                             "folder, without '..', '.', empty parts, backslashes or a leading '/'")
    if name in _RESERVED:
        raise IntegrityError(f"manifest entry {name!r} is reserved for the manifest and its signature")
    return name


def _folder(directory: str | os.PathLike[str]) -> Path:
    folder = Path(directory)
    if not folder.is_dir():
        raise IntegrityError(f"{folder} is not a folder; give the output folder that holds {MANIFEST_NAME}")
    return folder


def folder_files(directory: str | os.PathLike[str]) -> list[str]:
    """Every regular file under ``directory`` as a relative POSIX path, except the manifest and its signature.
    Symbolic links are refused: a signed folder must not point outside itself."""
    folder = _folder(directory)
    found = []
    for root, dirs, names in os.walk(folder, followlinks=False):
        for entry in sorted(dirs) + sorted(names):
            path = Path(root, entry)
            if path.is_symlink():
                raise IntegrityError(f"{path} is a symbolic link; a manifested folder holds only regular files "
                                     "and folders")
        for name in names:
            rel = PurePosixPath(Path(root, name).relative_to(folder).as_posix())
            if str(rel) not in _RESERVED:
                found.append(str(rel))
    return sorted(found)


def build_manifest(directory: str | os.PathLike[str], files: Iterable[str | os.PathLike[str]] | None = None,
                   ) -> dict[str, Any]:
    """The manifest of ``files`` (paths inside ``directory``, absolute or relative to it), or of every file in
    the folder when ``files`` is None."""
    folder = _folder(directory)
    if files is None:
        names = folder_files(folder)
    else:
        names = []
        base = Path(os.path.normpath(folder.absolute()))
        for f in files:  # normalised, not resolved: a symbolic link must be refused, not followed
            path = Path(os.path.normpath((folder / f).absolute()))
            try:
                rel = path.relative_to(base).as_posix()
            except ValueError:
                raise IntegrityError(f"{f} is not inside {folder}; a manifest lists files of its own folder only") \
                    from None
            names.append(_check_relative(rel))
    entries = {}
    for name in sorted(set(names)):
        path = folder / name
        parts = PurePosixPath(name).parts
        if any(folder.joinpath(*parts[: i + 1]).is_symlink() for i in range(len(parts))) or not path.is_file():
            raise IntegrityError(f"{path} is not a regular file; a manifest lists regular files only")
        entries[name] = {"sha256": sha256_file(path), "size": path.stat().st_size}
    return {"schema": MANIFEST_SCHEMA, "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "edgecompress_version": __version__, "files": entries}


def write_manifest(directory: str | os.PathLike[str], files: Iterable[str | os.PathLike[str]] | None = None
                   ) -> Manifest:
    """Write ``directory/manifest.json`` (canonical JSON, atomically) listing ``files`` or every file."""
    data = canonical_json(build_manifest(directory, files))
    atomic_write_bytes(Path(directory) / MANIFEST_NAME, data)
    return parse_manifest(data)


def parse_manifest(data: bytes, *, source: str = MANIFEST_NAME) -> Manifest:
    try:
        obj = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise IntegrityError(f"{source} is not valid UTF-8 JSON ({e}); it was damaged or is not a manifest") \
            from None
    if not isinstance(obj, dict) or obj.get("schema") != MANIFEST_SCHEMA:
        got = obj.get("schema") if isinstance(obj, dict) else type(obj).__name__
        raise IntegrityError(f"{source} has schema {got!r}; expected {MANIFEST_SCHEMA!r}")
    files = obj.get("files")
    if not isinstance(files, dict):
        raise IntegrityError(f"{source} has no 'files' mapping of path → {{sha256, size}}")
    entries = {}
    for name, entry in files.items():
        _check_relative(name)
        ok = (isinstance(entry, dict) and set(entry) == {"sha256", "size"} and isinstance(entry["sha256"], str)
              and _SHA256.fullmatch(entry["sha256"]) and isinstance(entry["size"], int)
              and not isinstance(entry["size"], bool) and entry["size"] >= 0)
        if not ok:
            raise IntegrityError(f"{source} entry {name!r} is {entry!r}; expected {{'sha256': 64 lowercase hex "
                                 "digits, 'size': a non-negative integer}")
        entries[name] = FileDigest(entry["sha256"], entry["size"])
    return Manifest(entries, str(obj.get("created", "")), str(obj.get("edgecompress_version", "")), data)


def read_manifest(directory: str | os.PathLike[str]) -> Manifest:
    path = _folder(directory) / MANIFEST_NAME
    if not path.is_file():
        raise IntegrityError(f"{path} is missing; write it with `edgecompress sign` (or it was removed)")
    return parse_manifest(path.read_bytes(), source=str(path))


def check_files(directory: str | os.PathLike[str], manifest: Manifest) -> None:
    """Refuse the folder unless it holds exactly the manifest's files with their recorded sizes and hashes.
    Every problem is named in one message: changed, missing and extra files."""
    folder = _folder(directory)
    present = set(folder_files(folder))
    missing = sorted(set(manifest.files) - present)
    extra = sorted(present - set(manifest.files))
    changed = []
    for name in sorted(set(manifest.files) & present):
        recorded = manifest.files[name]
        path = folder / name
        if path.stat().st_size != recorded.size or sha256_file(path) != recorded.sha256:
            changed.append(name)
    problems = [f"{label}: {', '.join(names)}" for label, names in
                (("changed", changed), ("missing", missing), ("not in the manifest", extra)) if names]
    if problems:
        raise IntegrityError(f"{folder} does not match its manifest ({'; '.join(problems)}); the folder was "
                             "modified after the manifest was written")


def verify_manifest(directory: str | os.PathLike[str]) -> Manifest:
    """Check the folder against its (unsigned) manifest. This finds accidental damage; only a signature
    (``verify_dir``) shows that nobody rewrote the files and the manifest together."""
    manifest = read_manifest(directory)
    check_files(directory, manifest)
    return manifest
