"""Security of artifacts: manifests and Ed25519 signatures (integrity), AES-256-GCM encryption at rest, and
a hash-chained audit log of runs; the content-addressed model registry with provenance (registry,
provenance); safe loading of model files (safe_loading)."""

from .audit import AUDIT_ENV, AuditSummary, append_entry, audit_log_path, read_entries, verify_log
from .encryption import (
    KEY_ENV,
    EncryptionKey,
    decrypt_bytes,
    decrypt_file,
    encrypt_bytes,
    encrypt_file,
    load_key,
    write_key,
)
from .manifest import (
    MANIFEST_NAME,
    SIGNATURE_NAME,
    FileDigest,
    Manifest,
    read_manifest,
    sha256_file,
    verify_manifest,
    write_manifest,
)
from .provenance import compression_provenance, data_fingerprint, register_compression
from .registry import Entry, Record, Registry, RegistryError, default_registry_path
from .signing import (
    KeyPair,
    fingerprint,
    generate_keypair,
    load_private_key,
    load_public_key,
    open_verified,
    sign_dir,
    verify_dir,
    verify_file,
)

__all__ = [
    "MANIFEST_NAME", "SIGNATURE_NAME", "FileDigest", "Manifest", "write_manifest", "read_manifest",
    "verify_manifest", "sha256_file",
    "KeyPair", "fingerprint", "generate_keypair", "load_private_key", "load_public_key", "sign_dir", "verify_dir",
    "open_verified", "verify_file",
    "KEY_ENV", "EncryptionKey", "load_key", "write_key", "encrypt_file", "decrypt_file", "encrypt_bytes",
    "decrypt_bytes",
    "AUDIT_ENV", "AuditSummary", "append_entry", "audit_log_path", "verify_log", "read_entries",
    "Registry", "RegistryError", "Record", "Entry", "default_registry_path", "register_compression",
    "compression_provenance", "data_fingerprint",
]
