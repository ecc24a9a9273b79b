"""The `edgecompress` command: a thin typer app that builds the inputs and calls the Python API."""

from __future__ import annotations

import functools
import warnings
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

from . import __version__
from .errors import EdgeCompressError, EdgeCompressWarning

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Compress trained PyTorch models for edge devices and measure the real artifact.")
console = Console()
errors = Console(stderr=True)

DEMO_MODEL = "builtin:mnist1d_cnn"
DEMO_RECIPE = "builtin:default"


def _version(value: bool) -> None:
    if value:
        console.print(f"edgecompress {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    """edgecompress"""


def _run_compress(model_spec: str, recipe: str, data: str | None, out: Path, weights: Path | None,
                  trust_pickle: bool = False, pub: Path | None = None) -> None:
    from .measure import render_summary
    from .model_io import check_output_folder, load_model
    from .pipeline import compress
    from .progress import make_progress

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", EdgeCompressWarning)
        check_output_folder(out, model_spec, weights)
        if pub is not None:
            _verify_inputs(pub, model_spec, weights)
        with make_progress() as progress:
            loaded = load_model(model_spec, weights=weights, progress=progress, trust_pickle=trust_pickle)
            data = data or loaded.dataset
            if data is None:
                raise EdgeCompressError("--data is required for a model that is not builtin "
                                        "(builtin:mnist1d, builtin:digits, a .npz file or module:function)")
            result = compress(loaded.model, recipe, data=data, example_inputs=loaded.example_inputs,
                              out_dir=out, progress=progress)
    for w in caught:
        if issubclass(w.category, EdgeCompressWarning):
            errors.print(f"[yellow]warning:[/] {w.message}")
    for renderable in render_summary(result.report):
        console.print(renderable)
    console.print(f"artifacts and report.json in [bold]{result.out_dir}[/]")


def _guarded(fn, *args) -> None:
    try:
        fn(*args)
    except EdgeCompressError as e:
        # escaped: a path or value in the message may hold [brackets]; one line, for logs
        errors.print(f"[red]error:[/] {escape(str(e))}", markup=True, highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None


@app.command("compress")
def compress_cmd(
    model: str = typer.Argument(..., help="builtin:NAME | package.module:factory | model.pt2"),
    recipe: str = typer.Option(DEMO_RECIPE, "--recipe", "-r",
                               help="recipe YAML file or builtin:default / builtin:design"),
    data: str = typer.Option(None, "--data", "-d",
                             help="builtin:mnist1d | builtin:digits | data.npz | module:function"),
    out: Path = typer.Option(Path("out"), "--out", "-o", help="folder for the artifacts and report.json"),
    weights: Path = typer.Option(None, "--weights", "-w", help=".safetensors weights for a module:factory model"),
    trust_pickle: bool = typer.Option(False, "--trust-pickle",
                                      help="also accept a pickle-based .pt/.pth/.pkl/.bin MODEL or --weights file "
                                           "you trust; it is read with torch's weights-only unpickler, which "
                                           "never calls a function the file names"),
    pub: Path = typer.Option(None, "--pub", help="load MODEL / --weights only from a folder signed by this "
                                                 "Ed25519 public key (edgecompress sign), verified first"),
) -> None:
    """Compress MODEL as the recipe says, export it, measure it on its runtime, and write a report."""
    _guarded(_run_compress, model, recipe, data, out, weights, trust_pickle, pub)


@app.command()
def demo(out: Path = typer.Option(Path("out/demo"), "--out", "-o", help="folder for the artifacts and report")) -> None:
    """Train (once, cached) the MNIST-1D CNN, prune and quantize it to INT8 ONNX, and measure it."""
    _guarded(_run_compress, DEMO_MODEL, DEMO_RECIPE, None, out, None)


# Security: manifests and Ed25519 signatures, AES-256-GCM encryption at rest, the audit log (security/).
def _say(text: str) -> None:
    console.print(text, markup=False, highlight=False, soft_wrap=True)


def _files(fn):
    """An OSError (permission denied, disk full, a folder where a file was expected) as one error line too."""
    @functools.wraps(fn)
    def run(*args):
        try:
            fn(*args)
        except OSError as e:
            raise EdgeCompressError(f"{str(e.filename) + ': ' if e.filename else ''}{e.strerror or e}") from None
    return run


def _verify_inputs(pub: Path, model_spec: str, weights: Path | None) -> None:
    """--pub: the model and weights files must belong to a folder signed by that key, checked before loading."""
    from .security import verify_file

    files = [Path(p) for p in (model_spec, weights) if p is not None and Path(p).is_file()]
    if not files:
        raise EdgeCompressError(f"--pub verifies model files, and {model_spec} is not a file (builtin and "
                                "package.module:factory models are code; sign their --weights folder instead)")
    for f in files:
        verify_file(f, pub)


@_files
def _run_keygen(path: Path, encryption: bool, force: bool) -> None:
    from .security import generate_keypair, write_key

    if encryption:
        key = write_key(path, force=force)
        _say(f"encryption key (AES-256, mode 0600, keep it secret): {path}\nkey id: {key.key_id}")
        return
    pair = generate_keypair(path, force=force)
    _say(f"private key (mode 0600, keep it secret): {pair.private_path}\npublic key: {pair.public_path}\n"
         f"fingerprint: {pair.fingerprint}")


@app.command()
def keygen(path: Path = typer.Argument(..., help="private key file; the public key is written to PATH.pub"),
           encryption: bool = typer.Option(False, "--encryption", help="write an AES-256 key for encrypt/decrypt"),
           force: bool = typer.Option(False, "--force", help="replace existing key files")) -> None:
    """Create an Ed25519 signing key pair (PATH, PATH.pub), or with --encryption an AES-256 key file."""
    _guarded(_run_keygen, path, encryption, force)


@_files
def _run_sign(directory: Path, key: Path) -> None:
    from .security import fingerprint, load_private_key, sign_dir

    private = load_private_key(key)
    manifest = sign_dir(directory, private)
    _say(f"signed {len(manifest.files)} files in {directory} with key {fingerprint(private)}")


@app.command()
def sign(directory: Path = typer.Argument(..., help="output folder (its manifest.json, or every file in it)"),
         key: Path = typer.Option(..., "--key", "-k", help="Ed25519 private key (edgecompress keygen)")) -> None:
    """Sign a folder: check it against manifest.json (written first if missing), then write manifest.sig."""
    _guarded(_run_sign, directory, key)


@_files
def _run_verify(directory: Path, pub: Path | None, no_signature: bool) -> None:
    from .security import fingerprint, load_public_key, verify_dir, verify_manifest

    if (pub is None) == (not no_signature):
        raise EdgeCompressError("give either the signer's public key (--pub KEY.pub) or --no-signature")
    if pub is not None:
        public = load_public_key(pub)
        manifest = verify_dir(directory, public)
        _say(f"OK: {len(manifest.files)} files in {directory} match the manifest signed by {fingerprint(public)}")
    else:
        manifest = verify_manifest(directory)
        _say(f"OK: {len(manifest.files)} files in {directory} match the manifest (signature not checked: this "
             "finds accidental damage, not deliberate changes)")


@app.command()
def verify(directory: Path = typer.Argument(..., help="signed output folder"),
           pub: Path = typer.Option(None, "--pub", "-p", help="the signer's Ed25519 public key (KEY.pub)"),
           no_signature: bool = typer.Option(False, "--no-signature", help="check only the manifest's hashes")
           ) -> None:
    """Check a folder's signature and that it holds exactly the files of its manifest, byte for byte."""
    _guarded(_run_verify, directory, pub, no_signature)


@_files
def _run_crypt(encrypt: bool, src: Path, key_file: Path | None, out: Path | None, force: bool) -> None:
    from .security import decrypt_file, encrypt_file, load_key

    key = load_key(key_file)
    written = (encrypt_file if encrypt else decrypt_file)(src, out, key=key, force=force)
    _say(f"{'encrypted' if encrypt else 'decrypted'} {src} -> {written} (key id {key.key_id})")


_KEY_HELP = "AES-256 key file (edgecompress keygen --encryption); default: $EDGECOMPRESS_KEY"


@app.command()
def encrypt(file: Path = typer.Argument(..., help="artifact to encrypt"),
            key: Path = typer.Option(None, "--key", "-k", help=_KEY_HELP),
            out: Path = typer.Option(None, "--out", "-o", help="encrypted file (default FILE.enc)"),
            force: bool = typer.Option(False, "--force", help="replace an existing output file")) -> None:
    """Encrypt an artifact with AES-256-GCM (authenticated: any change is refused on decryption)."""
    _guarded(_run_crypt, True, file, key, out, force)


@app.command()
def decrypt(file: Path = typer.Argument(..., help="file written by edgecompress encrypt"),
            key: Path = typer.Option(None, "--key", "-k", help=_KEY_HELP),
            out: Path = typer.Option(None, "--out", "-o", help="output (default: the original name beside FILE)"),
            force: bool = typer.Option(False, "--force", help="replace an existing output file")) -> None:
    """Decrypt and authenticate an encrypted artifact; nothing is written unless all of it authenticates."""
    _guarded(_run_crypt, False, file, key, out, force)


audit_app = typer.Typer(no_args_is_help=True, help="The tamper-evident log of compression runs.")
app.add_typer(audit_app, name="audit")


@_files
def _run_audit_verify(log: Path | None, head: str | None) -> None:
    from .security import verify_log

    summary = verify_log(log, head=head)
    _say(f"OK: {summary.entries} entries in {summary.path}, chain intact; head {summary.head} (keep it, and pass "
         "it as --head later to detect entries cut from the end)")


@audit_app.command("verify")
def audit_verify(log: Path = typer.Option(None, "--log", help="audit log (default: $EDGECOMPRESS_AUDIT_LOG or "
                                                              "audit.jsonl in the user data folder)"),
                 head: str = typer.Option(None, "--head", help="hash printed by an earlier verify")) -> None:
    """Check every entry of the audit log and the hash chain between them."""
    _guarded(_run_audit_verify, log, head)


registry_app = typer.Typer(no_args_is_help=True, help="The local model registry: every compressed artifact by "
                           "content hash, with its parent model, recipe, data fingerprint, metrics and versions.")
app.add_typer(registry_app, name="registry")
REGISTRY_ROOT = typer.Option(None, "--registry", help="registry folder (default: $EDGECOMPRESS_REGISTRY, else the "
                             "user data folder)")


def _registry_list(root: Path | None) -> None:
    from .security.provenance import entries_table
    from .security.registry import Registry

    registry = Registry(root)
    entries = registry.entries()
    if not entries:
        _say(f"the registry {registry.root} is empty: every `edgecompress compress` run registers its artifact there")
        return
    console.print(entries_table(entries, title=f"registry {registry.root}"))


def _registry_show(ref: str, root: Path | None) -> None:
    import json

    from .security.registry import Registry

    entry = Registry(root).resolve(ref)
    records = [{"record_id": r.id, **r.body} for r in entry.records]
    console.print_json(json.dumps({"artifact_sha256": entry.artifact_sha256, "records": records}))


def _registry_export(ref: str, out: Path, force: bool, root: Path | None) -> None:
    from .security.registry import Registry

    path = Registry(root).export(ref, out, force=force)
    console.print(f"wrote {path} (its SHA-256 checked against the registry)")


@registry_app.command("list")
def registry_list(root: Path = REGISTRY_ROOT) -> None:
    """One row per registered artifact."""
    _guarded(_registry_list, root)


@registry_app.command("show")
def registry_show(ref: str = typer.Argument(..., help="artifact hash, record id, or a prefix of either"),
                  root: Path = REGISTRY_ROOT) -> None:
    """Every record of one artifact, as JSON."""
    _guarded(_registry_show, ref, root)


@registry_app.command("export")
def registry_export(ref: str = typer.Argument(..., help="artifact hash, record id, or a prefix of either"),
                    out: Path = typer.Option(..., "--out", "-o", help="file to write"),
                    force: bool = typer.Option(False, "--force", help="replace an existing file"),
                    root: Path = REGISTRY_ROOT) -> None:
    """Write a registered artifact to a file, atomically, after checking its hash."""
    _guarded(_registry_export, ref, out, force, root)


def main() -> None:
    app()
