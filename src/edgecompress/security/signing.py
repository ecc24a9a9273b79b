"""Ed25519 signatures over a folder's manifest: the manifest pins every file's bytes, the signature pins the
manifest to one key. Keys are PEM files (PKCS#8 private, SubjectPublicKeyInfo public).

Why not the OpenSSF model-signing format: model-signing 1.1 needs pydantic >= 2.12 (litert-torch caps it at
2.11) and sigstore, and signs with ECDSA keys; the folder layout here stays small enough to check by hand.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ..errors import IntegrityError
from ..fileio import atomic_write_bytes
from .keyfiles import refuse_existing, write_key_file
from .manifest import (
    MANIFEST_NAME,
    SIGNATURE_NAME,
    Manifest,
    canonical_json,
    check_files,
    parse_manifest,
    read_manifest,
    sha256_file,
    write_manifest,
)

SIGNATURE_SCHEMA = "edgecompress.signature/1"
# Domain separation: a signature made here can never be replayed as a signature over anything else.
_CONTEXT = b"edgecompress-manifest-signature-v1\x00"

PrivateKeyLike = Ed25519PrivateKey | str | os.PathLike[str]
PublicKeyLike = Ed25519PublicKey | str | os.PathLike[str]


def fingerprint(key: Ed25519PublicKey | Ed25519PrivateKey) -> str:
    """``SHA256:<hex>`` of the raw 32-byte public key: what `keygen`, `sign` and `verify` print."""
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "SHA256:" + hashlib.sha256(raw).hexdigest()


@dataclass(frozen=True)
class KeyPair:
    private_path: Path
    public_path: Path
    fingerprint: str


def generate_keypair(private_path: str | os.PathLike[str], *, force: bool = False) -> KeyPair:
    """Write a new Ed25519 key: ``private_path`` (PEM, mode 0600) and ``private_path.pub``. Existing files are
    refused unless ``force``."""
    private_path = Path(private_path)
    public_path = private_path.with_name(private_path.name + ".pub")
    refuse_existing(private_path, public_path, force=force)
    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
    public_pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
    write_key_file(private_path, private_pem, private=True, force=force)
    write_key_file(public_path, public_pem, private=False, force=force)
    return KeyPair(private_path, public_path, fingerprint(key))


def _read_key_file(path: Path, what: str) -> bytes:
    if not path.is_file():
        raise IntegrityError(f"{what} file {path} not found")
    return path.read_bytes()


def load_private_key(key: PrivateKeyLike) -> Ed25519PrivateKey:
    if isinstance(key, Ed25519PrivateKey):
        return key
    path = Path(key)
    data = _read_key_file(path, "private key")
    try:
        loaded = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as e:
        # The message of cryptography names the format problem, never the key bytes.
        raise IntegrityError(f"{path} is not an unencrypted PEM private key ({e}); create one with "
                             "`edgecompress keygen NAME`") from None
    if not isinstance(loaded, Ed25519PrivateKey):
        raise IntegrityError(f"{path} holds a {type(loaded).__name__}; signing needs an Ed25519 key "
                             "(`edgecompress keygen NAME`)")
    return loaded


def load_public_key(key: PublicKeyLike) -> Ed25519PublicKey:
    if isinstance(key, Ed25519PublicKey):
        return key
    path = Path(key)
    data = _read_key_file(path, "public key")
    if b"PRIVATE KEY" in data:
        raise IntegrityError(f"{path} is a private key; verification takes the public key ({path}.pub), which "
                             "is the one to share")
    try:
        loaded = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as e:
        raise IntegrityError(f"{path} is not a PEM public key ({e}); `edgecompress keygen NAME` writes NAME.pub")\
            from None
    if not isinstance(loaded, Ed25519PublicKey):
        raise IntegrityError(f"{path} holds a {type(loaded).__name__}; expected an Ed25519 public key")
    return loaded


def sign_dir(directory: str | os.PathLike[str], private_key: PrivateKeyLike) -> Manifest:
    """Sign ``directory``: its manifest.json if present (after checking that the folder still matches it,
    so that a false manifest is never signed), else a new manifest of every file. Writes manifest.sig."""
    folder = Path(directory)
    key = load_private_key(private_key)
    if (folder / MANIFEST_NAME).exists():
        manifest = read_manifest(folder)
        check_files(folder, manifest)
    else:
        manifest = write_manifest(folder)
    signature = key.sign(_CONTEXT + manifest.data)
    atomic_write_bytes(folder / SIGNATURE_NAME, _signature_file(fingerprint(key), manifest.sha256, signature))
    return manifest


def _signature_file(key_fingerprint: str, manifest_sha256: str, signature: bytes) -> bytes:
    record = {"schema": SIGNATURE_SCHEMA, "algorithm": "ed25519", "public_key": key_fingerprint,
              "manifest_sha256": manifest_sha256, "signature": base64.b64encode(signature).decode()}
    return canonical_json(record) + b"\n"


def _read_signature(folder: Path) -> dict:
    path = folder / SIGNATURE_NAME
    if not path.is_file():
        raise IntegrityError(f"{folder} is not signed: {SIGNATURE_NAME} is missing (sign it with "
                             "`edgecompress sign DIR --key KEY`)")
    try:
        record = json.loads(path.read_bytes().decode("utf-8"))
        ok = (isinstance(record, dict) and record.get("schema") == SIGNATURE_SCHEMA
              and record.get("algorithm") == "ed25519" and isinstance(record.get("signature"), str))
    except (UnicodeDecodeError, json.JSONDecodeError):
        ok = False
    if not ok:
        raise IntegrityError(f"{path} is not an edgecompress signature (expected JSON with schema "
                             f"{SIGNATURE_SCHEMA!r} and algorithm 'ed25519')")
    return record


def verify_dir(directory: str | os.PathLike[str], public_key: PublicKeyLike) -> Manifest:
    """Check that ``public_key`` signed ``directory``'s manifest and that the folder holds exactly the files
    it lists, byte for byte. Returns the manifest; raises IntegrityError naming the first failed check."""
    folder = Path(directory)
    if not folder.is_dir():
        raise IntegrityError(f"{folder} is not a folder; give the signed output folder")
    key = load_public_key(public_key)
    record = _read_signature(folder)
    path = folder / MANIFEST_NAME
    if not path.is_file():
        raise IntegrityError(f"{path} is missing: the folder was signed with it, so it was removed")
    data = path.read_bytes()  # read once: the bytes checked are the bytes used, and parsed only once signed
    try:
        signature = base64.b64decode(record["signature"], validate=True)
    except (binascii.Error, ValueError):
        signature = b""
    try:
        key.verify(signature, _CONTEXT + data)
    except InvalidSignature:
        if record.get("public_key") != fingerprint(key):
            raise IntegrityError(f"{folder} is signed by key {record.get('public_key')}, not by the given key "
                                 f"{fingerprint(key)}") from None
        raise IntegrityError(f"the signature of {folder} does not match {MANIFEST_NAME} under key "
                             f"{fingerprint(key)}: the manifest or the signature was modified") from None
    # the signature covers the manifest only; its file's other fields must be exactly what sign_dir wrote,
    # so that no byte of the folder can change unnoticed
    if (folder / SIGNATURE_NAME).read_bytes() != _signature_file(fingerprint(key), hashlib.sha256(data).hexdigest(),
                                                                 signature):
        raise IntegrityError(f"{folder / SIGNATURE_NAME} was modified: its signature is valid but its other fields "
                             "are not those that `edgecompress sign` wrote")
    manifest = parse_manifest(data, source=str(path))
    check_files(folder, manifest)
    return manifest


def _manifest_folder(path: Path) -> Path:
    for folder in path.parents:
        if (folder / MANIFEST_NAME).is_file():
            return folder
    raise IntegrityError(f"no {MANIFEST_NAME} in any folder above {path}; only a file of a signed folder can "
                         "be opened verified")


def open_verified(path: str | os.PathLike[str], public_key: PublicKeyLike) -> bytes:
    """The bytes of ``path`` after verifying the signed folder that holds it (the nearest folder above it
    with a manifest). The returned bytes are hashed again, so a file swapped after the check is refused."""
    path = Path(os.path.abspath(path))  # normalised: "sub/../x" names x
    folder = _manifest_folder(path)
    manifest = verify_dir(folder, public_key)
    name = path.relative_to(folder).as_posix()
    if name not in manifest.files:
        raise IntegrityError(f"{path} is not listed in {folder / MANIFEST_NAME}")
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != manifest.files[name].sha256:
        raise IntegrityError(f"{path} changed after its folder was verified")
    return data


def verify_file(path: str | os.PathLike[str], public_key: PublicKeyLike) -> Path:
    """Verify the signed folder that holds ``path`` and that ``path`` is one of its files; for loaders that
    need a path (torch.export.load, onnxruntime). Prefer ``open_verified`` where bytes will do."""
    path = Path(os.path.abspath(path))  # normalised: "sub/../x" names x
    folder = _manifest_folder(path)
    manifest = verify_dir(folder, public_key)
    name = path.relative_to(folder).as_posix()
    if name not in manifest.files or sha256_file(path) != manifest.files[name].sha256:
        raise IntegrityError(f"{path} is not a verified file of {folder}")
    return path

