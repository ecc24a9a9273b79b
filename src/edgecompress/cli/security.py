"""Security commands: Ed25519 keys, signing and verifying output folders, AES-256-GCM encryption at rest, and
the audit log (security/)."""

from __future__ import annotations

from pathlib import Path

import typer

from ..errors import EdgeCompressError
from .common import app, files_as_errors, guarded, say


@files_as_errors
def _run_keygen(path: Path, encryption: bool, force: bool) -> None:
    from ..security import generate_keypair, write_key

    if encryption:
        key = write_key(path, force=force)
        say(f"encryption key (AES-256, mode 0600, keep it secret): {path}\nkey id: {key.key_id}")
        return
    pair = generate_keypair(path, force=force)
    say(f"private key (mode 0600, keep it secret): {pair.private_path}\npublic key: {pair.public_path}\n"
         f"fingerprint: {pair.fingerprint}")


@app.command()
def keygen(path: Path = typer.Argument(..., help="private key file; the public key is written to PATH.pub"),
           encryption: bool = typer.Option(False, "--encryption", help="write an AES-256 key for encrypt/decrypt"),
           force: bool = typer.Option(False, "--force", help="replace existing key files")) -> None:
    """Create an Ed25519 signing key pair (PATH, PATH.pub), or with --encryption an AES-256 key file."""
    guarded(_run_keygen, path, encryption, force)


@files_as_errors
def _run_sign(directory: Path, key: Path) -> None:
    from ..security import fingerprint, load_private_key, sign_dir

    private = load_private_key(key)
    manifest = sign_dir(directory, private)
    say(f"signed {len(manifest.files)} files in {directory} with key {fingerprint(private)}")


@app.command()
def sign(directory: Path = typer.Argument(..., help="output folder (its manifest.json, or every file in it)"),
         key: Path = typer.Option(..., "--key", "-k", help="Ed25519 private key (edgecompress keygen)")) -> None:
    """Sign a folder: check it against manifest.json (written first if missing), then write manifest.sig."""
    guarded(_run_sign, directory, key)


@files_as_errors
def _run_verify(directory: Path, pub: Path | None, no_signature: bool) -> None:
    from ..security import fingerprint, load_public_key, verify_dir, verify_manifest

    if (pub is None) == (not no_signature):
        raise EdgeCompressError("give either the signer's public key (--pub KEY.pub) or --no-signature")
    if pub is not None:
        public = load_public_key(pub)
        manifest = verify_dir(directory, public)
        say(f"OK: {len(manifest.files)} files in {directory} match the manifest signed by {fingerprint(public)}")
    else:
        manifest = verify_manifest(directory)
        say(f"OK: {len(manifest.files)} files in {directory} match the manifest (signature not checked: this "
             "finds accidental damage, not deliberate changes)")


@app.command()
def verify(directory: Path = typer.Argument(..., help="signed output folder"),
           pub: Path = typer.Option(None, "--pub", "-p", help="the signer's Ed25519 public key (KEY.pub)"),
           no_signature: bool = typer.Option(False, "--no-signature", help="check only the manifest's hashes")
           ) -> None:
    """Check a folder's signature and that it holds exactly the files of its manifest, byte for byte."""
    guarded(_run_verify, directory, pub, no_signature)


@files_as_errors
def _run_crypt(encrypt: bool, src: Path, key_file: Path | None, out: Path | None, force: bool) -> None:
    from ..security import decrypt_file, encrypt_file, load_key

    key = load_key(key_file)
    written = (encrypt_file if encrypt else decrypt_file)(src, out, key=key, force=force)
    say(f"{'encrypted' if encrypt else 'decrypted'} {src} -> {written} (key id {key.key_id})")


_KEY_HELP = "AES-256 key file (edgecompress keygen --encryption); default: $EDGECOMPRESS_KEY"


@app.command()
def encrypt(file: Path = typer.Argument(..., help="artifact to encrypt"),
            key: Path = typer.Option(None, "--key", "-k", help=_KEY_HELP),
            out: Path = typer.Option(None, "--out", "-o", help="encrypted file (default FILE.enc)"),
            force: bool = typer.Option(False, "--force", help="replace an existing output file")) -> None:
    """Encrypt an artifact with AES-256-GCM (authenticated: any change is refused on decryption)."""
    guarded(_run_crypt, True, file, key, out, force)


@app.command()
def decrypt(file: Path = typer.Argument(..., help="file written by edgecompress encrypt"),
            key: Path = typer.Option(None, "--key", "-k", help=_KEY_HELP),
            out: Path = typer.Option(None, "--out", "-o", help="output (default: the original name beside FILE)"),
            force: bool = typer.Option(False, "--force", help="replace an existing output file")) -> None:
    """Decrypt and authenticate an encrypted artifact; nothing is written unless all of it authenticates."""
    guarded(_run_crypt, False, file, key, out, force)


audit_app = typer.Typer(no_args_is_help=True, help="The tamper-evident log of compression runs.")
app.add_typer(audit_app, name="audit")


@files_as_errors
def _run_audit_verify(log: Path | None, head: str | None) -> None:
    from ..security import verify_log

    summary = verify_log(log, head=head)
    say(f"OK: {summary.entries} entries in {summary.path}, chain intact; head {summary.head} (keep it, and pass "
         "it as --head later to detect entries cut from the end)")


@audit_app.command("verify")
def audit_verify(log: Path = typer.Option(None, "--log", help="audit log (default: $EDGECOMPRESS_AUDIT_LOG or "
                                                              "audit.jsonl in the user data folder)"),
                 head: str = typer.Option(None, "--head", help="hash printed by an earlier verify")) -> None:
    """Check every entry of the audit log and the hash chain between them."""
    guarded(_run_audit_verify, log, head)
