"""S4: a local model registry keyed by content hash, with the provenance of every artifact.

Layout under the registry root (``$EDGECOMPRESS_REGISTRY``, else the platform's user data folder)::

    blobs/<sha256>                       the artifact's bytes, named by their SHA-256
    records/<sha256>/<record id>.json    one provenance record per registration of that artifact

A record's id is the SHA-256 of its own canonical JSON. Every file is written under a temporary name and
renamed into place, and no file is ever rewritten with other content (a blob's name fixes its bytes, a
record's name fixes its text), so concurrent writers need no lock: two processes registering at once each
add their own files and neither can lose the other's. The folder listing is the index; ``check()`` verifies
that every record parses, matches its name, and points to a blob whose bytes still hash to its name."""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..errors import EdgeCompressError, IntegrityError
from ..fileio import atomic_path, strict_json, write_json_atomic

ENV_VAR = "EDGECOMPRESS_REGISTRY"
SCHEMA = 1
_CHUNK = 1 << 20
_HEX = re.compile(r"[0-9a-f]+")
_SHA256 = re.compile(r"[0-9a-f]{64}")


class RegistryError(EdgeCompressError):
    """A registry entry is missing or ambiguous, or the registry cannot be read or written."""


def default_registry_path() -> Path:
    """``$EDGECOMPRESS_REGISTRY`` if set, else ``<user data dir>/edgecompress/registry`` (platformdirs)."""
    configured = os.environ.get(ENV_VAR)
    if configured:
        return Path(configured).expanduser()
    from platformdirs import user_data_dir

    return Path(user_data_dir("edgecompress", appauthor=False)) / "registry"


def canonical_json(obj: Any) -> bytes:
    """The one byte form hashed for ids: sorted keys, no spaces, non-finite floats as strings."""
    return json.dumps(strict_json(obj), sort_keys=True, separators=(",", ":"), allow_nan=False,
                      default=str).encode()


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Record:
    """One registration of an artifact: its id (SHA-256 of ``body``'s canonical JSON) and the stored JSON."""

    id: str
    body: dict

    @property
    def artifact_sha256(self) -> str:
        return self.body["artifact"]["sha256"]

    @property
    def created(self) -> str:
        return self.body.get("created", "")


@dataclass(frozen=True)
class Entry:
    """An artifact in the registry and every record registering it, oldest first."""

    artifact_sha256: str
    records: tuple[Record, ...]

    @property
    def latest(self) -> Record:
        return self.records[-1]


class Registry:
    """A registry folder. Every method reads the folder afresh, so other processes' writes are seen."""

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.root = Path(root) if root is not None else default_registry_path()

    @property
    def blobs(self) -> Path:
        return self.root / "blobs"

    @property
    def record_dir(self) -> Path:
        return self.root / "records"

    def add(self, artifact: str | os.PathLike[str], provenance: Mapping[str, Any], *,
            expected_sha256: str | None = None) -> Record:
        """Store ``artifact``'s bytes (once per content) and a record of ``provenance`` for them. With
        ``expected_sha256`` (e.g. from report.json), bytes that no longer hash to it raise IntegrityError."""
        path = Path(artifact)
        if not path.is_file():
            raise RegistryError(f"cannot register {path}: it is not a file")
        if "artifact" in provenance or "created" in provenance:
            raise RegistryError("provenance may not set 'artifact' or 'created'; the registry fills them in")
        try:
            digest, size = self._store_blob(path)
        except OSError as e:
            raise RegistryError(f"cannot write to the registry at {self.root}: {e.strerror or e} (set "
                                f"{ENV_VAR} to a writable folder)") from None
        if expected_sha256 is not None and digest != expected_sha256:
            raise IntegrityError(f"{path} hashes to {digest}, not to the {expected_sha256} recorded for it: the "
                                 "file changed after it was written")
        body = {"schema": SCHEMA, "artifact": {"sha256": digest, "size_bytes": size, "file_name": path.name},
                **provenance, "created": datetime.now(UTC).isoformat(timespec="microseconds")}
        try:  # the JSON round trip first, so that the id is the hash of exactly what is read back
            body = json.loads(canonical_json(body))
        except (TypeError, ValueError) as e:
            raise RegistryError(f"the provenance of {path} is not JSON-serialisable: {e}") from None
        record = Record(sha256_hex(canonical_json(body)), body)
        try:
            write_json_atomic(self.record_dir / digest / f"{record.id}.json", body)
        except OSError as e:
            raise RegistryError(f"cannot write to the registry at {self.root}: {e.strerror or e}") from None
        return record

    def _store_blob(self, path: Path) -> tuple[str, int]:
        digest, size = _hash_file(path)
        blob = self.blobs / digest
        if blob.is_file() and _hash_file(blob)[0] == digest:
            return digest, size
        with atomic_path(blob) as tmp:  # a damaged or missing blob is (re)written whole
            copied = _copy_hashing(path, tmp)
        if copied != digest:
            blob.unlink(missing_ok=True)
            raise IntegrityError(f"{path} changed while it was being registered (hash {digest} then {copied})")
        return digest, size

    def records(self) -> list[Record]:
        """Every record, oldest first. A record that does not parse raises RegistryError, one whose content no
        longer hashes to its name IntegrityError (``check`` lists them all)."""
        found = [self._read_record(p) for p in self._record_paths()]
        return sorted(found, key=lambda r: (r.created, r.id))

    def entries(self) -> list[Entry]:
        """One entry per artifact, ordered by its latest registration."""
        grouped: dict[str, list[Record]] = {}
        for record in self.records():
            grouped.setdefault(record.artifact_sha256, []).append(record)
        entries = [Entry(sha, tuple(rs)) for sha, rs in grouped.items()]
        return sorted(entries, key=lambda e: (e.latest.created, e.artifact_sha256))

    def resolve(self, ref: str) -> Entry:
        """The entry whose artifact hash, or one of whose record ids, starts with ``ref`` (hex, any length)."""
        ref = ref.strip().lower()
        if not ref or not _HEX.fullmatch(ref):
            raise RegistryError(f"{ref!r} is not a hash or hash prefix (hexadecimal digits); "
                                "`edgecompress registry list` shows the entries")
        entries = self.entries()
        matches = [e for e in entries if e.artifact_sha256.startswith(ref)]
        if not matches:
            matches = [e for e in entries if any(r.id.startswith(ref) for r in e.records)]
        if not matches:
            raise RegistryError(f"no registry entry matches {ref!r} in {self.root} ({len(entries)} entries); "
                                "`edgecompress registry list` shows them")
        if len(matches) > 1:
            listed = ", ".join(e.artifact_sha256[:16] for e in matches[:6])
            raise RegistryError(f"the prefix {ref!r} is ambiguous: it matches {len(matches)} entries ({listed}"
                                f"{', …' if len(matches) > 6 else ''}); give more characters")
        return matches[0]

    def export(self, ref: str, out: str | os.PathLike[str], *, force: bool = False) -> Path:
        """Write the artifact ``ref`` names to ``out`` atomically, checking its hash on the way out (a stored
        blob whose bytes changed raises IntegrityError and writes nothing). An existing ``out`` needs ``force``."""
        entry = self.resolve(ref)
        out = Path(out)
        if out.is_dir():
            raise RegistryError(f"--out {out} is a folder; give the file name to write")
        if out.exists() and not force:
            raise RegistryError(f"{out} exists; pass --force (force=True) to replace it")
        blob = self.blobs / entry.artifact_sha256
        if not blob.is_file():
            raise IntegrityError(f"the registry at {self.root} has a record of {entry.artifact_sha256} but not its "
                                 "bytes (blob missing)")
        with atomic_path(out) as tmp:
            copied = _copy_hashing(blob, tmp)
            if copied != entry.artifact_sha256:
                raise IntegrityError(f"the stored bytes of {entry.artifact_sha256} now hash to {copied}: the blob "
                                     f"{blob} was altered; nothing was written to {out}")
        return out

    def check(self) -> list[str]:
        """The registry's problems (empty when consistent): unreadable or misnamed records, missing blobs,
        blobs whose bytes no longer match their name."""
        problems = []
        referenced = set()
        for path in self._record_paths():
            try:
                record = self._read_record(path)
            except (RegistryError, IntegrityError) as e:
                problems.append(str(e))
                continue
            referenced.add(record.artifact_sha256)
            if path.parent.name != record.artifact_sha256:
                problems.append(f"{path} records {record.artifact_sha256} but is filed under {path.parent.name}")
        for digest in sorted(referenced):
            blob = self.blobs / digest
            if not blob.is_file():
                problems.append(f"blob {digest} is missing")
            elif _hash_file(blob)[0] != digest:
                problems.append(f"blob {digest} was altered (its bytes hash to something else)")
        return problems

    def _record_paths(self) -> Iterable[Path]:
        if not self.record_dir.is_dir():
            return []
        return sorted(p for p in self.record_dir.glob("*/*.json") if not p.name.startswith("."))

    def _read_record(self, path: Path) -> Record:
        try:
            raw = path.read_bytes()
            body = json.loads(raw)
            digest = body["artifact"]["sha256"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise RegistryError(f"registry record {path} is unreadable ({type(e).__name__}: {e}); restore the file "
                                "or remove it") from None
        if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
            raise RegistryError(f"registry record {path} names no valid artifact hash")
        record_id = sha256_hex(canonical_json(body))
        if path.stem != record_id:
            raise IntegrityError(f"registry record {path} was altered: its content hashes to {record_id[:16]}…, "
                                 "not to its name; restore the file or remove it")
        return Record(record_id, body)


def _hash_file(path: Path) -> tuple[str, int]:
    h, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def _copy_hashing(src: Path, dst: Path) -> str:
    h = hashlib.sha256()
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        while chunk := fin.read(_CHUNK):
            h.update(chunk)
            fout.write(chunk)
        fout.flush()
        os.fsync(fout.fileno())
    return h.hexdigest()
