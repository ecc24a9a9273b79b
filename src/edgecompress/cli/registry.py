"""`edgecompress registry list/show/export`: the local content-addressed model registry."""

from __future__ import annotations

from pathlib import Path

import typer

from .common import app, console, guarded, say

registry_app = typer.Typer(no_args_is_help=True, help="The local model registry: every compressed artifact by "
                           "content hash, with its parent model, recipe, data fingerprint, metrics and versions.")
app.add_typer(registry_app, name="registry")
REGISTRY_ROOT = typer.Option(None, "--registry", help="registry folder (default: $EDGECOMPRESS_REGISTRY, else the "
                             "user data folder)")


def _registry_list(root: Path | None) -> None:
    from ..security.provenance import entries_table
    from ..security.registry import Registry

    registry = Registry(root)
    entries = registry.entries()
    if not entries:
        say(f"the registry {registry.root} is empty: every `edgecompress compress` run registers its artifact there")
        return
    console.print(entries_table(entries, title=f"registry {registry.root}"))


def _registry_show(ref: str, root: Path | None) -> None:
    import json

    from ..security.registry import Registry

    entry = Registry(root).resolve(ref)
    records = [{"record_id": r.id, **r.body} for r in entry.records]
    console.print_json(json.dumps({"artifact_sha256": entry.artifact_sha256, "records": records}))


def _registry_export(ref: str, out: Path, force: bool, root: Path | None) -> None:
    from ..security.registry import Registry

    path = Registry(root).export(ref, out, force=force)
    console.print(f"wrote {path} (its SHA-256 checked against the registry)")


@registry_app.command("list")
def registry_list(root: Path = REGISTRY_ROOT) -> None:
    """One row per registered artifact."""
    guarded(_registry_list, root)


@registry_app.command("show")
def registry_show(ref: str = typer.Argument(..., help="artifact hash, record id, or a prefix of either"),
                  root: Path = REGISTRY_ROOT) -> None:
    """Every record of one artifact, as JSON."""
    guarded(_registry_show, ref, root)


@registry_app.command("export")
def registry_export(ref: str = typer.Argument(..., help="artifact hash, record id, or a prefix of either"),
                    out: Path = typer.Option(..., "--out", "-o", help="file to write"),
                    force: bool = typer.Option(False, "--force", help="replace an existing file"),
                    root: Path = REGISTRY_ROOT) -> None:
    """Write a registered artifact to a file, atomically, after checking its hash."""
    guarded(_registry_export, ref, out, force, root)
