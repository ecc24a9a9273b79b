"""The audit log: one JSON line per run, each carrying the hash of the line before, so that an edited,
removed, inserted or reordered entry breaks the chain. Appends hold a file lock, so concurrent runs on one
machine keep one valid chain.

A chain alone cannot show that entries were cut from its end, or that the whole log was rewritten: keep the
head hash that `verify_log` returns somewhere else and pass it back as ``head``.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import platformdirs
from filelock import FileLock, Timeout

from ..errors import EdgeCompressError, IntegrityError
from .manifest import canonical_json

AUDIT_ENV = "EDGECOMPRESS_AUDIT_LOG"
GENESIS = "0" * 64
FIELDS = ("seq", "time", "user", "host", "action", "inputs", "recipe_sha256", "outputs", "result", "prev_hash",
          "hash")
_HASH = re.compile(r"[0-9a-f]{64}")


def audit_log_path() -> Path:
    """``$EDGECOMPRESS_AUDIT_LOG``, else ``audit.jsonl`` in the user data folder (not the cache: it must not be
    cleared with rebuildable files). Read on every call so tests and services can redirect it."""
    value = os.environ.get(AUDIT_ENV)
    return Path(value) if value else Path(platformdirs.user_data_dir("edgecompress")) / "audit.jsonl"


def entry_hash(entry: Mapping[str, Any]) -> str:
    """SHA-256 of the canonical JSON of the entry without its own ``hash``."""
    return hashlib.sha256(canonical_json({k: v for k, v in entry.items() if k != "hash"})).hexdigest()


def _user() -> str:
    try:  # the account of the process, not $USER, which any caller can set
        import pwd

        return pwd.getpwuid(os.getuid()).pw_name
    except (ImportError, KeyError):
        try:
            return getpass.getuser()
        except Exception:  # getuser raises OSError or KeyError depending on the platform
            return "unknown"


def _check_entry(entry: Any, where: str) -> dict:
    if not isinstance(entry, dict) or set(entry) != set(FIELDS):
        got = sorted(entry) if isinstance(entry, dict) else type(entry).__name__
        raise IntegrityError(f"{where} is not an audit entry: it has {got}, expected the fields {list(FIELDS)}")
    hashes = (entry["inputs"], entry["outputs"])
    ok = (isinstance(entry["seq"], int) and not isinstance(entry["seq"], bool) and entry["seq"] >= 1
          and all(isinstance(entry[k], str) for k in ("time", "user", "host", "action"))
          and all(isinstance(m, dict) and all(isinstance(v, str) for v in m.values()) for m in hashes)
          and (entry["recipe_sha256"] is None or isinstance(entry["recipe_sha256"], str))
          and all(isinstance(entry[k], str) and _HASH.fullmatch(entry[k]) for k in ("prev_hash", "hash")))
    if not ok:
        raise IntegrityError(f"{where} has a field of the wrong type (seq ≥ 1, text fields, name → sha256 maps, "
                             "64-hex hashes expected): it was edited")
    return entry


def _parse_line(raw: bytes, where: str) -> dict:
    if not raw.endswith(b"\n"):
        raise IntegrityError(f"{where} is incomplete (no line end): the log was truncated or a write was cut short")
    try:
        entry = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise IntegrityError(f"{where} is not valid JSON: it was edited or damaged") from None
    entry = _check_entry(entry, where)
    if entry_hash(entry) != entry["hash"]:
        raise IntegrityError(f"{where} was edited: its content does not match its hash")
    return entry


def _last_line(f) -> bytes:
    """The last line of the open binary file ``f`` (with its line end, if any), reading backwards in blocks."""
    end = f.seek(0, os.SEEK_END)
    pos, tail = end, b""
    while pos > 0:
        step = min(1 << 16, pos)
        pos -= step
        f.seek(pos)
        tail = f.read(step) + tail
        cut = tail.rfind(b"\n", 0, len(tail) - 1)
        if cut >= 0:
            return tail[cut + 1:]
    return tail


def append_entry(action: str, *, inputs: Mapping[str, str], outputs: Mapping[str, str], result: Any,
                 recipe_sha256: str | None = None, path: str | os.PathLike[str] | None = None,
                 timeout: float = 60.0) -> dict:
    """Append one entry to the audit log (``path`` or ``audit_log_path()``) and return it. ``inputs`` and
    ``outputs`` map a name to a SHA-256; ``result`` is any JSON value. The last entry is checked first, so a
    damaged end of log is reported instead of being chained onto."""
    for label, names in (("inputs", inputs), ("outputs", outputs)):
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in names.items()):
            raise EdgeCompressError(f"audit {label} map names to SHA-256 hex strings; got {dict(names)!r}")
    try:
        canonical_json(result)
    except (TypeError, ValueError) as e:
        raise EdgeCompressError(f"an audit result must be a finite JSON value; got {result!r} ({e})") from None
    log = Path(path) if path is not None else audit_log_path()
    try:
        log.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(log) + ".lock", timeout=timeout)
        with lock:
            last = None
            if log.exists() and log.stat().st_size:
                with open(log, "rb") as f:
                    last = _parse_line(_last_line(f), f"the last line of {log}")
            entry = {"seq": last["seq"] + 1 if last else 1,
                     "time": datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z"),
                     "user": _user(), "host": socket.gethostname(), "action": action, "inputs": dict(inputs),
                     "recipe_sha256": recipe_sha256, "outputs": dict(outputs), "result": result,
                     "prev_hash": last["hash"] if last else GENESIS}
            entry["hash"] = entry_hash(entry)
            # Stored in field order for people; the hash is over the canonical (sorted) form.
            line = json.dumps(entry, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode() + b"\n"
            fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                view = memoryview(line)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)
    except Timeout:
        raise EdgeCompressError(f"the audit log {log} stayed locked for {timeout:g} s by another process") from None
    except IntegrityError as e:
        raise IntegrityError(f"{e}. Nothing was appended; inspect it with `edgecompress audit verify --log {log}` "
                             f"and move it aside, or point {AUDIT_ENV} elsewhere") from None
    except OSError as e:
        raise EdgeCompressError(f"cannot append to the audit log {log}: {e.strerror or e}; set {AUDIT_ENV} to a "
                                "writable file") from None
    return entry


@dataclass(frozen=True)
class AuditSummary:
    path: Path
    entries: int
    head: str | None  # hash of the last entry; keep it elsewhere to detect later cuts from the end


def read_entries(path: str | os.PathLike[str] | None = None) -> list[dict]:
    """Every entry of the log after ``verify_log`` accepted it."""
    log = Path(path) if path is not None else audit_log_path()
    verify_log(log)
    with open(log, "rb") as f:
        return [json.loads(raw) for raw in f]


def verify_log(path: str | os.PathLike[str] | None = None, *, head: str | None = None) -> AuditSummary:
    """Check every line of the log and the chain between them; raise IntegrityError naming the first bad
    line and what happened to it (edited, removed, reordered, truncated). With ``head`` (a hash an earlier
    verify returned), also check that this entry is still in the log."""
    log = Path(path) if path is not None else audit_log_path()
    if not log.is_file():
        raise IntegrityError(f"the audit log {log} {'is not a file' if log.exists() else 'does not exist'}")
    with open(log, "rb") as f:
        lines = f.readlines()
    last_line_of: dict[int, int] = {}  # seq → the last line holding it, to tell reordered from removed
    for i, raw in enumerate(lines):
        try:
            last_line_of[int(json.loads(raw)["seq"])] = i
        except (ValueError, KeyError, TypeError):
            continue  # the line itself is reported when the pass below reaches it
    prev_seq, prev_hash, hashes = 0, GENESIS, set()
    for i, raw in enumerate(lines):
        where = f"line {i + 1} of {log}"
        entry = _parse_line(raw, where)
        seq, expected = entry["seq"], prev_seq + 1
        if seq != expected:
            if seq < expected:  # every entry before `expected` was already seen, in order
                how = f"entry {seq} is repeated (a line was copied or moved back)"
            elif last_line_of.get(expected, -1) > i:
                how = f"entries were reordered (entry {expected} comes later)"
            elif i == 0:
                how = f"entries 1..{seq - 1} were removed from the start"
            else:
                how = f"entries {expected}..{seq - 1} were removed" if seq - 1 > expected else \
                    f"entry {expected} was removed"
            raise IntegrityError(f"{where} holds entry {seq} where entry {expected} was expected: {how}")
        if entry["prev_hash"] != prev_hash:
            raise IntegrityError(f"{where} does not chain to the line before (prev_hash differs): "
                                 f"{'line ' + str(i) + ' was edited and its hash recomputed, or ' if i else ''}"
                                 "an entry was replaced")
        prev_seq, prev_hash = seq, entry["hash"]
        hashes.add(prev_hash)
    if head is not None and head not in hashes:
        raise IntegrityError(f"{log} no longer holds the entry with hash {head}: entries were removed from its "
                             "end, or the log was replaced")
    return AuditSummary(log, len(lines), prev_hash if lines else None)
