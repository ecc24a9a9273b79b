"""The summary of a report as rich tables, in human units: baseline, compressed and their ratio, the
budget checks, the parity of the compressed artifact, stage timings and warnings."""

from __future__ import annotations

import math

from rich.console import RenderableType
from rich.table import Table
from rich.text import Text

from .environment import cpu_summary

DASH = "—"
_DETAIL_LABELS = {"b1_tall": "batch 1, all threads", "bN_t1": "batch {n}, 1 thread",
                  "bN_tall": "batch {n}, all threads"}


def _number(value: float, digits: int = 3) -> str:
    return f"{value:.{digits}g}" if math.isfinite(value) else str(value)


def _scaled(n: float, units: tuple[str, str, str], sep: str) -> str | None:
    """``n`` in the largest decimal unit (giga, mega, kilo) it reaches, or None below a thousand."""
    for unit, scale in zip(units, (1e9, 1e6, 1e3), strict=True):
        if abs(n) >= scale:
            return f"{_number(n / scale)}{sep}{unit}"
    return None


def fmt_bytes(n: float | None) -> str:
    """Decimal units (1 MB = 1,000,000 bytes), as size targets use."""
    if n is None:
        return DASH
    return _scaled(n, ("GB", "MB", "KB"), " ") or f"{int(n)} B"


def fmt_count(n: float | None) -> str:
    if n is None:
        return DASH
    return _scaled(n, ("G", "M", "k"), "") or _number(n, 4)


def fmt_percent(x: float | None) -> str:
    return DASH if x is None else f"{100 * x:.1f} %"


def fmt_ratio(x: float | None) -> str:
    return DASH if x is None else f"{_number(x)}×"


def _fmt_latency(lat: dict | None) -> str:
    if not lat or lat.get("p50") is None:
        return DASH
    p90 = lat.get("p90")
    return f"{_number(lat['p50'])} / {_number(p90)} ms" if p90 is not None else f"{_number(lat['p50'])} ms"


def _p50_ratio(base: dict | None, comp: dict | None) -> float | None:
    if not base or not comp or not base.get("p50") or not comp.get("p50"):
        return None
    return base["p50"] / comp["p50"]


def _accuracy_row(base: dict, comp: dict, ratios: dict) -> tuple[str, str, str, str]:
    if base.get("accuracy") is not None or comp.get("accuracy") is not None:
        drop = ratios.get("accuracy_drop")
        change = DASH if drop is None else f"{-100 * drop:+.2f} pts"
        return "accuracy", fmt_percent(base.get("accuracy")), fmt_percent(comp.get("accuracy")), change
    agreement = [(m.get("fidelity") or {}).get("top1_agreement") for m in (base, comp)]
    retention = ratios.get("accuracy_retention")
    return ("top-1 agreement with original", fmt_percent(agreement[0]), fmt_percent(agreement[1]),
            DASH if retention is None else f"{fmt_percent(retention)} kept")


def _latency_rows(base: dict, comp: dict, ratios: dict) -> list[tuple[str, str, str, str]]:
    runtimes = {base.get("runtime"), comp.get("runtime")} - {None}
    where = f"{runtimes.pop()}, " if len(runtimes) == 1 else ""
    rows = [(f"latency p50 / p90 ({where}batch 1, 1 thread)", _fmt_latency(base.get("latency_ms")),
             _fmt_latency(comp.get("latency_ms")), fmt_ratio(ratios.get("latency")))]
    if len(runtimes) > 1:  # different runtimes: name each beside its figure
        rows[0] = (rows[0][0], f"{rows[0][1]} ({base.get('runtime')})", f"{rows[0][2]} ({comp.get('runtime')})",
                   rows[0][3])
    base_detail, comp_detail = base.get("latency_detail") or {}, comp.get("latency_detail") or {}
    n = comp_detail.get("batch_size_N", base_detail.get("batch_size_N", "N"))
    for key, label in _DETAIL_LABELS.items():
        b, c = base_detail.get(key), comp_detail.get(key)
        if b or c:
            rows.append((f"latency p50 ({label.format(n=n)})", _fmt_latency({"p50": (b or {}).get("p50")}),
                         _fmt_latency({"p50": (c or {}).get("p50")}), fmt_ratio(_p50_ratio(b, c))))
    rows.append(("torch eager latency p50 / p90 (batch 1, 1 thread)", _fmt_latency(base.get("torch_latency_ms")),
                 _fmt_latency(comp.get("torch_latency_ms")), fmt_ratio(ratios.get("torch_latency"))))
    return rows


def _mib(x: float | None) -> str:
    return DASH if x is None else f"{_number(x)} MiB"


def _megabytes(v: float) -> str:
    return f"{_number(v)} MB"


def _milliseconds(v: float) -> str:
    return f"{_number(v)} ms"


# name → (label, how its limit and value are written)
_TARGET_FORMATS = {
    "max_size_mb": ("size ≤ {}", _megabytes),
    "max_latency_ms": ("latency p50 ≤ {}", _milliseconds),
    "min_accuracy": ("accuracy ≥ {}", fmt_percent),
    "min_top1_agreement": ("top-1 agreement ≥ {}", fmt_percent),
    "target_flops": ("FLOPs ≤ {}", fmt_count),
}


def _target_row(target: dict) -> tuple[str, str, str, Text]:
    name, limit, value = target.get("name"), target.get("limit"), target.get("value")
    label, fmt = _TARGET_FORMATS.get(name, (f"{name} {{}}", str))
    met = Text("✓ met", style="green") if target.get("met") else Text("✗ not met", style="bold red")
    return (f"target: {label.format(DASH if limit is None else fmt(limit))}", "",
            DASH if value is None else fmt(value), met)


def _compressed_artifact(report: dict) -> dict | None:
    artifacts = report.get("artifacts") or []
    path = (report.get("compressed") or {}).get("path")
    for artifact in artifacts:
        if artifact.get("role") == "compressed" or (path and artifact.get("path") == path):
            return artifact
    return artifacts[-1] if artifacts else None


def _parity_text(parity: dict) -> str:
    parts = []
    if parity.get("top1_agreement") is not None:
        parts.append(f"top-1 {fmt_percent(parity['top1_agreement'])}")
    if parity.get("sqnr_db") is not None:
        parts.append(f"SQNR {_number(parity['sqnr_db'])} dB")
    if parity.get("max_abs_diff") is not None:
        parts.append(f"max |Δ| {_number(parity['max_abs_diff'])}")
    return ", ".join(parts) or DASH


def summary_table(report: dict) -> Table:
    """Baseline, compressed and ratio for every figure of the report, then the budget checks and the
    parity of the compressed artifact (its runtime's outputs against PyTorch's)."""
    base, comp = report.get("baseline") or {}, report.get("compressed") or {}
    ratios = report.get("ratios") or {}
    version = report.get("edgecompress_version")
    table = Table(title=f"edgecompress {version}" if version else "edgecompress",
                  caption=cpu_summary(report["environment"]) if report.get("environment") else None)
    table.add_column("")
    for name in ("baseline", "compressed", "ratio"):
        table.add_column(name, justify="right")
    rows = [
        (f"artifact size ({comp.get('format') or base.get('format') or 'on disk'})",
         fmt_bytes(base.get("size_bytes")), fmt_bytes(comp.get("size_bytes")), fmt_ratio(ratios.get("size"))),
        ("OTA size (gzip)", fmt_bytes(base.get("ota_bytes")), fmt_bytes(comp.get("ota_bytes")),
         fmt_ratio(ratios.get("ota_size"))),
        ("params", fmt_count(base.get("params")), fmt_count(comp.get("params")), fmt_ratio(ratios.get("params"))),
        ("MACs", fmt_count(base.get("macs")), fmt_count(comp.get("macs")), fmt_ratio(ratios.get("macs"))),
        ("sparsity", fmt_percent(base.get("sparsity")), fmt_percent(comp.get("sparsity")), ""),
        _accuracy_row(base, comp, ratios),
        *_latency_rows(base, comp, ratios),
        ("peak RAM (RSS)", _mib(base.get("peak_rss_mb")), _mib(comp.get("peak_rss_mb")),
         fmt_ratio(ratios.get("peak_rss"))),
    ]
    for row in rows:
        table.add_row(*row)
    targets = report.get("targets") or []
    artifact = _compressed_artifact(report)
    if targets or artifact:
        table.add_section()
    for target in targets:
        table.add_row(*_target_row(target))
    if artifact is not None:
        table.add_row(f"parity ({artifact.get('format', '?')} in runtime vs PyTorch)", "",
                      _parity_text(artifact.get("parity") or {}), "")
    return table


def render_summary(report: dict) -> list[RenderableType]:
    """The summary table, the stage timings, and the report's warnings, ready for ``Console.print``."""
    renderables: list[RenderableType] = [summary_table(report)]
    stages = report.get("stages") or []
    if stages:
        timings = Table(title="stages")
        timings.add_column("stage")
        timings.add_column("seconds", justify="right")
        for stage in stages:
            seconds = stage.get("seconds")
            timings.add_row(str(stage.get("name", "?")), DASH if seconds is None else f"{seconds:.2f}")
        renderables.append(timings)
    renderables += [Text(f"warning: {w}", style="yellow") for w in report.get("warnings") or []]
    return renderables
