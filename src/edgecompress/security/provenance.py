"""What the registry records about a compression run (S4): the parent model's hash, the normalised recipe and
its hash, a fingerprint of the data, the measured figures, and the tool and library versions; and the table
``edgecompress registry list`` prints from those records."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from .registry import Entry, Registry, canonical_json, sha256_hex

_DATA_KEYS = ("x_train", "y_train", "x_test", "y_test")
_METRIC_KEYS = ("size_bytes", "ota_bytes", "params", "macs", "sparsity", "accuracy", "simulation_accuracy",
                "latency_ms", "torch_latency_ms", "fidelity", "peak_rss_mb", "runtime")


def data_fingerprint(dataset: Any) -> str:
    """SHA-256 over the data set's name and the four splits' dtypes, shapes and bytes; the same value the audit
    log records for the run's data (pipeline.sealing.dataset_sha256)."""
    h = hashlib.sha256(dataset.name.encode())
    for key in _DATA_KEYS:
        tensor = getattr(dataset, key)
        if tensor is None:
            h.update(b"none")
            continue
        h.update(f"{tensor.dtype}{tuple(tensor.shape)}".encode())
        h.update(tensor.detach().cpu().contiguous().numpy().data)
    return h.hexdigest()


def compression_provenance(report: Mapping[str, Any], dataset: Any, *, parent_sha256: str) -> dict:
    """The record of one ``compress`` run, from its report (see pipeline.compress) and its data set."""
    artifacts = {a["role"]: a for a in report["artifacts"]}
    recipe = report["recipe"]
    return {
        "kind": "compression",
        "format": artifacts["compressed"]["format"],
        "scheme": artifacts["compressed"]["scheme"],
        "parent": {"model_state_sha256": parent_sha256,
                   "baseline_artifact_sha256": artifacts["baseline"]["sha256"]},
        "recipe": recipe,
        "recipe_sha256": sha256_hex(canonical_json(recipe)),
        "data": {"name": dataset.name, "fingerprint": data_fingerprint(dataset),
                 "train": int(dataset.x_train.shape[0]), "test": int(dataset.x_test.shape[0]),
                 "labelled": dataset.y_train is not None},
        "metrics": {"compressed": _metrics(report["compressed"]), "baseline": _metrics(report["baseline"]),
                    "ratios": report.get("ratios"), "targets": report.get("targets")},
        "tool": {"name": "edgecompress", "version": report.get("edgecompress_version")},
        "environment": report.get("environment"),
    }


def register_compression(report: Mapping[str, Any], dataset: Any, *, parent_sha256: str,
                         registry: Registry | None = None) -> dict:
    """Register the compressed artifact of ``report`` with its provenance; returns where it was recorded
    ({"root", "artifact_sha256", "record_id"}). The artifact must still hash to the report's SHA-256."""
    registry = registry if registry is not None else Registry()
    artifact = next(a for a in report["artifacts"] if a["role"] == "compressed")
    record = registry.add(artifact["path"], compression_provenance(report, dataset, parent_sha256=parent_sha256),
                          expected_sha256=artifact["sha256"])
    return {"root": str(registry.root), "artifact_sha256": record.artifact_sha256, "record_id": record.id}


def _metrics(measured: Mapping[str, Any]) -> dict:
    return {k: measured.get(k) for k in _METRIC_KEYS if k in measured}


def entries_table(entries: list[Entry], *, title: str | None = None):
    """A rich Table: one row per artifact, from its latest record."""
    from rich.table import Table

    from ..measure.table import fmt_bytes

    table = Table(title=title)
    table.add_column("artifact", no_wrap=True, min_width=12)  # the prefix `registry show` takes: never cut
    for column in ("format", "size", "accuracy", "parent", "recipe", "data", "registered", "runs"):
        table.add_column(column, justify="right" if column in ("size", "accuracy", "runs") else "left")
    for entry in entries:
        body = entry.latest.body
        compressed = (body.get("metrics") or {}).get("compressed") or {}
        accuracy = compressed.get("accuracy")
        recipe_name = (body.get("recipe") or {}).get("name") or ""
        data = body.get("data") or {}
        table.add_row(
            entry.artifact_sha256[:12],
            " ".join(str(body[k]) for k in ("format", "scheme") if body.get(k)) or "—",
            fmt_bytes(body["artifact"].get("size_bytes")),
            "—" if not isinstance(accuracy, float | int) else f"{100 * accuracy:.1f} %",
            str((body.get("parent") or {}).get("model_state_sha256") or "—")[:12],
            " ".join(p for p in (recipe_name, str(body.get("recipe_sha256") or "")[:8]) if p) or "—",
            " ".join(p for p in (str(data.get("name") or ""), str(data.get("fingerprint") or "")[:8]) if p) or "—",
            entry.latest.created[:19].replace("T", " "),
            str(len(entry.records)),
        )
    return table
