"""Encryption of artifacts at rest: AES-256-GCM in authenticated chunks (the STREAM construction), so files
of any size stream through a bounded buffer and a changed, reordered, truncated or extended file is refused.

File layout: header = magic "EDGECENC", version, chunk size, 96-bit random nonce, key id, original file name;
then per chunk ciphertext + 16-byte tag. Chunk i uses the file nonce XOR (i, last-chunk flag), and the whole
header is the associated data of every chunk, so the name and the parameters cannot be altered either.
The key never appears in a message, a repr or a log: only its id (8 bytes of a hash of it) does.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import os
import re
import struct
from pathlib import Path
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ..errors import EdgeCompressError, IntegrityError, UnsupportedError
from .keyfiles import private_output, refuse_existing, write_key_file

KEY_ENV = "EDGECOMPRESS_KEY"
MAGIC = b"EDGECENC"
VERSION = 1
DEFAULT_CHUNK = 1 << 20
_MIN_CHUNK, _MAX_CHUNK = 64, 64 << 20  # bounds a hostile header's buffer size
_HEADER = struct.Struct(">8sBI12s8sH")  # magic, version, chunk size, nonce, key id, name length
_TAG = 16
_HEX_KEY = re.compile(rb"[0-9a-fA-F]{64}")


class EncryptionKey:
    """A 256-bit AES key whose repr and str show only its id and where it came from."""

    __slots__ = ("_secret", "source")

    def __init__(self, secret: bytes, source: str = "memory") -> None:
        if not isinstance(secret, bytes) or len(secret) != 32:
            raise IntegrityError(f"an AES-256 key is 32 bytes; the key from {source} has "
                                 f"{len(secret) if isinstance(secret, bytes) else type(secret).__name__}")
        self._secret = secret
        self.source = source

    @classmethod
    def generate(cls) -> EncryptionKey:
        return cls(os.urandom(32), "a new random key")

    @property
    def key_id(self) -> str:
        return hashlib.sha256(b"edgecompress-key-id\x00" + self._secret).digest()[:8].hex()

    def __repr__(self) -> str:
        return f"EncryptionKey(id={self.key_id}, source={self.source!r})"

    __str__ = __repr__

    def __reduce__(self):
        raise TypeError("an EncryptionKey is not pickled: it would put the key on disk in clear")


def parse_key(raw: bytes, source: str, *, allow_raw: bool = True) -> EncryptionKey:
    """A key from 32 raw bytes (files only), 64 hex digits, or base64 of 32 bytes."""
    if allow_raw and len(raw) == 32:
        return EncryptionKey(raw, source)
    text = raw.strip()
    if _HEX_KEY.fullmatch(text):
        return EncryptionKey(bytes.fromhex(text.decode()), source)
    padded = text + b"=" * (-len(text) % 4)
    try:  # standard or URL-safe alphabet, padding optional
        secret = base64.b64decode(padded.translate(bytes.maketrans(b"-_", b"+/")), validate=True)
    except (binascii.Error, ValueError):
        secret = b""
    if len(secret) == 32:
        return EncryptionKey(secret, source)
    forms = "32 raw bytes, 64 hex digits or base64 of 32 bytes" if allow_raw else "64 hex digits or base64 of 32 bytes"
    raise IntegrityError(f"the key from {source} is not an AES-256 key: expected {forms}, got {len(raw)} bytes "
                         "that are none of these")


def load_key(path: str | os.PathLike[str] | None = None, *, env: str = KEY_ENV) -> EncryptionKey:
    """The key in file ``path``, else in the environment variable ``env``."""
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise EdgeCompressError(f"key file {path} not found; create one with `edgecompress keygen NAME "
                                    "--encryption`")
        return parse_key(path.read_bytes(), f"file {path}")
    value = os.environ.get(env)
    if value:
        return parse_key(value.encode(), f"${env}", allow_raw=False)
    raise EdgeCompressError(f"no encryption key: give a key file (--key FILE) or set {env} to 64 hex digits")


def write_key(path: str | os.PathLike[str], *, force: bool = False) -> EncryptionKey:
    """Write a new random key to ``path`` as hex (mode 0600); an existing file is refused unless ``force``."""
    path = Path(path)
    refuse_existing(path, force=force)
    key = EncryptionKey.generate()
    write_key_file(path, key._secret.hex().encode() + b"\n", private=True, force=force)
    return EncryptionKey(key._secret, f"file {path}")


def _check_name(name: str, source: str) -> str:
    if (not name or name in (".", "..") or any(c in name for c in "/\\\x00")
            or len(name.encode("utf-8", "surrogateescape")) > 255):
        raise IntegrityError(f"{source} records the file name {name!r}; expected a plain file name")
    return name


def _read_full(f: BinaryIO, n: int) -> bytes:
    parts, left = [], n
    while left:
        block = f.read(left)
        if not block:
            break
        parts.append(block)
        left -= len(block)
    return b"".join(parts)


def _chunk_nonce(nonce: bytes, index: int, last: bool) -> bytes:
    counter = int.from_bytes(nonce[7:11], "big") ^ index
    return nonce[:7] + counter.to_bytes(4, "big") + bytes([nonce[11] ^ int(last)])


def encrypt_stream(src: BinaryIO, dst: BinaryIO, *, key: EncryptionKey, name: str = "",
                   chunk_size: int = DEFAULT_CHUNK) -> None:
    if not _MIN_CHUNK <= chunk_size <= _MAX_CHUNK:
        raise UnsupportedError(f"chunk_size={chunk_size}; allowed: {_MIN_CHUNK} to {_MAX_CHUNK} bytes")
    if name:
        _check_name(name, "the input")
    nonce = os.urandom(12)
    name_bytes = name.encode("utf-8", "surrogateescape")
    header = _HEADER.pack(MAGIC, VERSION, chunk_size, nonce, bytes.fromhex(key.key_id), len(name_bytes)) + name_bytes
    aes = AESGCM(key._secret)
    dst.write(header)
    index, block = 0, _read_full(src, chunk_size)
    while True:
        following = _read_full(src, chunk_size)
        last = not following
        dst.write(aes.encrypt(_chunk_nonce(nonce, index, last), block, header))
        if last:
            return
        index, block = index + 1, following
        if index >= 1 << 32:
            raise UnsupportedError(f"the input has more than 2^32 chunks of {chunk_size} bytes; use a larger "
                                   "chunk_size")


def _read_header(src: BinaryIO, source: str) -> tuple[bytes, int, bytes, bytes, str]:
    fixed = _read_full(src, _HEADER.size)
    if not fixed.startswith(MAGIC[: len(fixed)]) or not fixed:
        raise IntegrityError(f"{source} is not an edgecompress encrypted file (it does not start with {MAGIC!r})")
    if len(fixed) < _HEADER.size:
        raise IntegrityError(f"{source} is truncated: its header is {len(fixed)} of {_HEADER.size} bytes")
    _, version, chunk_size, nonce, key_id, name_length = _HEADER.unpack(fixed)
    if version != VERSION:
        raise IntegrityError(f"{source} has format version {version}; this edgecompress reads version {VERSION}")
    if not _MIN_CHUNK <= chunk_size <= _MAX_CHUNK:
        raise IntegrityError(f"{source} has a damaged header (chunk size {chunk_size} is outside "
                             f"{_MIN_CHUNK}..{_MAX_CHUNK})")
    name_bytes = _read_full(src, name_length)
    if len(name_bytes) < name_length:
        raise IntegrityError(f"{source} is truncated inside its header")
    name = name_bytes.decode("utf-8", "surrogateescape")
    if name:
        _check_name(name, source)
    return fixed + name_bytes, chunk_size, nonce, key_id, name


def _decrypt_body(src: BinaryIO, dst: BinaryIO, header: tuple[bytes, int, bytes, bytes, str], key: EncryptionKey,
                  source: str) -> None:
    raw_header, chunk_size, nonce, key_id, _ = header
    if key_id.hex() != key.key_id:
        raise IntegrityError(f"wrong key: {source} was encrypted with key id {key_id.hex()}, the key from "
                             f"{key.source} has id {key.key_id} (or the header was modified)")
    aes = AESGCM(key._secret)
    index, block = 0, _read_full(src, chunk_size + _TAG)
    while True:
        following = _read_full(src, chunk_size + _TAG)
        last = not following
        try:
            dst.write(aes.decrypt(_chunk_nonce(nonce, index, last), block, raw_header))
        except InvalidTag:
            raise IntegrityError(f"{source} fails authentication at chunk {index}: it was modified, truncated or "
                                 "extended after encryption") from None
        if last:
            return
        index, block = index + 1, following


def decrypt_stream(src: BinaryIO, dst: BinaryIO, *, key: EncryptionKey, source: str = "the input") -> str:
    """Decrypt ``src`` into ``dst``; returns the recorded file name. ``dst`` receives plaintext before the
    last chunk is checked: write to a temporary file and keep it only if this returns."""
    header = _read_header(src, source)
    _decrypt_body(src, dst, header, key, source)
    return header[4]


def encrypt_bytes(data: bytes, *, key: EncryptionKey, name: str = "", chunk_size: int = DEFAULT_CHUNK) -> bytes:
    out = io.BytesIO()
    encrypt_stream(io.BytesIO(data), out, key=key, name=name, chunk_size=chunk_size)
    return out.getvalue()


def decrypt_bytes(blob: bytes, *, key: EncryptionKey, source: str = "the input") -> bytes:
    """The plaintext of ``blob``, e.g. to hand an encrypted ONNX model to onnxruntime without writing it out."""
    out = io.BytesIO()
    decrypt_stream(io.BytesIO(blob), out, key=key, source=source)
    return out.getvalue()


def _check_paths(src: Path, dst: Path, *, force: bool, what: str) -> None:
    if not src.is_file():
        raise EdgeCompressError(f"{src} is not a file; {what} takes one file")
    if dst.exists() and (os.path.samefile(src, dst) or dst.is_dir()):
        raise EdgeCompressError(f"the output {dst} is the input itself or a folder; give another --out path")
    refuse_existing(dst, force=force, what="an output file")


def encrypt_file(src: str | os.PathLike[str], dst: str | os.PathLike[str] | None = None, *, key: EncryptionKey,
                 force: bool = False, chunk_size: int = DEFAULT_CHUNK) -> Path:
    """Encrypt ``src`` to ``dst`` (default ``src.enc``), atomically; the input is never overwritten."""
    src = Path(src)
    dst = Path(dst) if dst is not None else src.with_name(src.name + ".enc")
    _check_paths(src, dst, force=force, what="encrypt")
    with open(src, "rb") as f, private_output(dst, force=force, what="an output file") as tmp:
        with open(tmp, "wb") as out:
            encrypt_stream(f, out, key=key, name=src.name, chunk_size=chunk_size)
            out.flush()
            os.fsync(out.fileno())
    return dst


def decrypt_file(src: str | os.PathLike[str], dst: str | os.PathLike[str] | None = None, *, key: EncryptionKey,
                 force: bool = False) -> Path:
    """Decrypt ``src`` to ``dst`` (default: the recorded file name beside ``src``), mode 0600, atomically:
    nothing is written unless every chunk authenticates."""
    src = Path(src)
    if not src.is_file():
        raise EdgeCompressError(f"{src} is not a file; decrypt takes one file")
    with open(src, "rb") as f:
        header = _read_header(f, str(src))
        if dst is None and not header[4]:
            raise EdgeCompressError(f"{src} records no file name; give the output path (--out)")
        dst = Path(dst) if dst is not None else src.with_name(header[4])
        _check_paths(src, dst, force=force, what="decrypt")
        with private_output(dst, force=force, what="an output file") as tmp:
            with open(tmp, "wb") as out:
                _decrypt_body(f, out, header, key, str(src))
                out.flush()
                os.fsync(out.fileno())
    return dst
