"""The end of a run: the normalised recipe beside the artifacts, a manifest over every file the run wrote,
and one entry in the audit log (security/)."""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Sequence
from pathlib import Path

from ..errors import EdgeCompressError, EdgeCompressWarning, IntegrityError
from ..export import Artifact
from ..fileio import json_bytes, write_json_atomic
from ..recipe import Recipe, load_recipe
from ..security.audit import append_entry
from ..security.manifest import MANIFEST_NAME, SIGNATURE_NAME, Manifest, folder_files, write_manifest

RECIPE_NAME = "recipe.json"


def dataset_sha256(dataset) -> str:
    """SHA-256 over the name, dtypes, shapes and bytes of the train and test tensors."""
    h = hashlib.sha256(dataset.name.encode())
    for t in (dataset.x_train, dataset.y_train, dataset.x_test, dataset.y_test):
        if t is None:
            h.update(b"none")
            continue
        h.update(f"{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def seal_run(out: Path, recipe: Recipe, artifacts: Sequence[Artifact], report: dict, *,
             inputs: dict[str, str]) -> Manifest:
    """Write out/recipe.json and out/manifest.json (artifacts, report.json, report.html, recipe.json) and append a
    'compress' entry to the audit log. ``inputs`` maps names ('model', 'data') to SHA-256 hashes."""
    write_json_atomic(out / RECIPE_NAME, recipe.to_dict())  # JSON is YAML: reusable with --recipe
    # A signature left by an earlier run in this folder covers another manifest: drop it rather than leave
    # a folder that looks signed.
    (out / SIGNATURE_NAME).unlink(missing_ok=True)
    # absolute: write_manifest reads relative paths as relative to the folder, and ``out`` may be relative
    written = [Path(f).absolute() for a in artifacts for f in (a.files or (a.path,))] + [
        (out / "report.json").absolute(), (out / "report.html").absolute(), (out / RECIPE_NAME).absolute()]
    manifest = write_manifest(out, written)
    try:
        stale = sorted(set(folder_files(out)) - set(manifest.files))
        problem = f"also holds files this run did not write ({', '.join(stale[:5])}{', …' if len(stale) > 5 else ''})"
    except IntegrityError as e:
        stale, problem = [True], f"cannot be listed in full: {e}"
    if stale:
        warnings.warn(f"{out} {problem}; `edgecompress sign` and `verify` refuse the folder until they are removed "
                      "(or write to a fresh folder)", EdgeCompressWarning, stacklevel=3)
    missed = [t["name"] for t in report.get("targets", []) if not t.get("met")]
    append_entry("compress", inputs=inputs, recipe_sha256=manifest.files[RECIPE_NAME].sha256,
                 outputs={**{name: d.sha256 for name, d in manifest.files.items()}, MANIFEST_NAME: manifest.sha256},
                 result={"status": "ok", "targets_not_met": missed})
    return manifest


def record_failed_run(model_sha256: str | None, recipe, error: Exception) -> None:
    """Append a 'compress' entry with status 'failed' (the error's type and message) to the audit log. A log
    that cannot be written is warned about; the run's own error is what the caller sees."""
    try:
        # the hash recipe.json would have had: the same recipe names the same hash in failed and finished runs
        recipe_sha256 = hashlib.sha256(json_bytes(load_recipe(recipe).to_dict())).hexdigest()
    except Exception:  # the recipe itself may be what failed
        recipe_sha256 = None
    try:
        append_entry("compress", inputs={} if model_sha256 is None else {"model": model_sha256}, outputs={},
                     recipe_sha256=recipe_sha256,
                     result={"status": "failed", "error": f"{type(error).__name__}: {str(error)[:500]}"})
    except (EdgeCompressError, OSError) as e:
        warnings.warn(f"the failed run could not be recorded in the audit log: {e}", EdgeCompressWarning,
                      stacklevel=3)
