"""A report as one self-contained HTML page (R2): figures as inline SVG drawn with matplotlib, CSS inline, no
script, no network. Pure: a report dict (as report.json holds it) and optional candidates give a string.

Every string taken from the report is HTML-escaped, and matplotlib keeps text as SVG text nodes, which it
escapes itself. The page is deterministic for a given report and matplotlib version (fixed SVG id salt, no
date), so re-rendering an unchanged report.json leaves report.html byte for byte as the manifest signed it."""

from __future__ import annotations

import html
import io
import json
import math
import os
import re
from collections.abc import Sequence
from numbers import Real
from pathlib import Path

from ..errors import DataError
from ..fileio import atomic_write_bytes, json_bytes
from .environment import cpu_summary
from .table import DASH, fmt_bytes, fmt_count, fmt_percent, fmt_ratio

__all__ = ["pareto_front", "report_candidates", "render_html", "write_html_report"]

_BASE, _COMP, _FRONT, _OTHER, _BAD = "#8c96a8", "#2f6fdf", "#d9480f", "#8c96a8", "#c92a2a"
_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0 auto;max-width:1100px;padding:1em 2em;
color:#1d232e}
h1{margin-bottom:.2em}h2{border-bottom:1px solid #d0d5de;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.6em 0}th,td{padding:.25em .7em;border-bottom:1px solid #e3e6ec;text-align:left}
td.n{text-align:right;font-variant-numeric:tabular-nums}code{font-size:12px;word-break:break-all}
.ok{color:#2b8a3e;font-weight:600}.bad{color:#c92a2a;font-weight:600}.muted{color:#667085}
.peak td{background:#fff4e6}figure{margin:.6em 0}svg{max-width:100%;height:auto}
"""


def _num(value) -> float | None:
    """A finite or infinite number from the report, else None (report.json writes inf/nan as strings)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, Real):
        return float(value)
    if isinstance(value, str) and value in ("inf", "-inf", "nan"):
        return float(value)
    return None


def _finite(value) -> float | None:
    x = _num(value)
    return x if x is not None and math.isfinite(x) else None


def _e(value) -> str:
    return html.escape(DASH if value is None else str(value), quote=True)


def _g(value, unit: str = "") -> str:
    x = _num(value)
    if x is None:
        return DASH
    return (f"{x:.4g}" if math.isfinite(x) else str(x)) + unit


def pareto_front(points: Sequence[tuple[float | None, float | None]]) -> list[bool]:
    """For (cost, quality) points, where a lower cost (size, latency) and a higher quality (accuracy) are
    better: True for each point no other point dominates (as good in both and better in one). A point with a
    missing or NaN coordinate is never on the front; equal points are all on it."""
    valid = [(c, q) if c is not None and q is not None and not (math.isnan(c) or math.isnan(q)) else None
             for c, q in ((_num(c), _num(q)) for c, q in points)]
    front = []
    for i, p in enumerate(valid):
        front.append(p is not None and not any(
            o is not None and o[0] <= p[0] and o[1] >= p[1] and (o[0] < p[0] or o[1] > p[1])
            for j, o in enumerate(valid) if j != i))
    return front


def _quality(metrics: dict) -> float | None:
    if metrics.get("accuracy") is not None:
        return _num(metrics["accuracy"])
    return _num((metrics.get("fidelity") or {}).get("top1_agreement"))


def _quality_label(report: dict) -> str:
    labelled = any((report.get(k) or {}).get("accuracy") is not None for k in ("baseline", "compressed"))
    return "accuracy" if labelled or not (report.get("baseline") or report.get("compressed")) else "top-1 agreement"


def report_candidates(report: dict) -> list[dict]:
    """The models a report measured, as candidates {label, size_bytes, accuracy, latency_ms}: today the
    baseline and the compressed model (accuracy: the top-1 agreement with the original when unlabelled)."""
    return [{"label": label, "size_bytes": _num(m.get("size_bytes")), "accuracy": _quality(m),
             "latency_ms": _num((m.get("latency_ms") or {}).get("p50"))}
            for label, m in (("baseline", report.get("baseline")), ("compressed", report.get("compressed"))) if m]


def _check_candidates(candidates) -> list[dict]:
    if not isinstance(candidates, (list, tuple)) or not all(isinstance(c, dict) for c in candidates):
        raise DataError(f"candidates must be a list of dicts {{label, size_bytes, accuracy, latency_ms}}, "
                        f"got {type(candidates).__name__}")
    for c in candidates:
        missing = {"label", "size_bytes", "accuracy", "latency_ms"} - set(c)
        if missing:
            raise DataError(f"candidate {c.get('label')!r} is missing {sorted(missing)}; each candidate needs label, "
                            "size_bytes, accuracy (a fraction or None) and latency_ms (p50, or None)")
    return list(candidates)


# ---- figures -------------------------------------------------------------------------------------------------

def _plain(text) -> str:
    """``text`` as matplotlib draws it literally: a ``$`` would otherwise start mathtext (and may not parse)."""
    return str(text).replace("$", r"\$")


def _svg(fig) -> str:
    """The figure as inline SVG: without the XML prolog, DOCTYPE and RDF metadata."""
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    text = buf.getvalue()
    text = text[text.index("<svg"):]
    return re.sub(r"<metadata>.*?</metadata>\s*", "", text, flags=re.S)


def _figure(width: float, height: float, ncols: int = 1):
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend, no plt.show

    fig = Figure(figsize=(width, height), layout="constrained")
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, list(axes)


def _plot(draw) -> str:
    import matplotlib

    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "edgecompress", "font.size": 9,
                                "axes.spines.top": False, "axes.spines.right": False}):
        return _svg(draw())


def _before_after_figure(report: dict) -> str | None:
    base, comp = report.get("baseline") or {}, report.get("compressed") or {}
    panels = [("artifact size (bytes)", base.get("size_bytes"), comp.get("size_bytes")),
              ("OTA size, gzip (bytes)", base.get("ota_bytes"), comp.get("ota_bytes")),
              (_quality_label(report), _quality(base), _quality(comp)),
              ("latency p50 (ms)", *((m.get("latency_ms") or {}).get("p50") for m in (base, comp)))]
    panels = [(t, _finite(b), _finite(c)) for t, b, c in panels]
    panels = [p for p in panels if p[1] is not None or p[2] is not None]
    if not panels:
        return None

    def draw():
        fig, axes = _figure(2.6 * len(panels), 2.4, len(panels))
        for ax, (title, b, c) in zip(axes, panels, strict=True):
            values = [0.0 if b is None else b, 0.0 if c is None else c]
            bars = ax.bar(["baseline", "compressed"], values, color=[_BASE, _COMP])
            ax.bar_label(bars, labels=[DASH if v is None else f"{v:.4g}" for v in (b, c)], fontsize=8)
            ax.set_title(title)
            ax.margins(y=0.15)
        return fig
    return _plot(draw)


def _tradeoff_figure(candidates: list[dict], quality: str) -> str | None:
    axes_spec = [("size_bytes", "artifact size (bytes)"), ("latency_ms", "latency p50 (ms)")]
    if not any(_finite(c["accuracy"]) is not None and any(_finite(c[k]) is not None for k, _ in axes_spec)
               for c in candidates):
        return None

    def draw():
        fig, axes = _figure(10, 3.6, 2)
        for ax, (key, xlabel) in zip(axes, axes_spec, strict=True):
            pts = [(c["label"], _finite(c[key]), _finite(c["accuracy"])) for c in candidates]
            pts = [p for p in pts if p[1] is not None and p[2] is not None]
            front = pareto_front([(x, y) for _, x, y in pts])
            others = [p for p, f in zip(pts, front, strict=True) if not f]
            on = sorted((p for p, f in zip(pts, front, strict=True) if f), key=lambda p: (p[1], p[2]))
            if others:
                ax.scatter([p[1] for p in others], [p[2] for p in others], color=_OTHER, label="dominated", zorder=2)
            if on:
                ax.step([p[1] for p in on], [p[2] for p in on], where="post", color=_FRONT, alpha=0.6, zorder=1)
                ax.scatter([p[1] for p in on], [p[2] for p in on], color=_FRONT, marker="D", label="Pareto front",
                           zorder=3)
            for label, x, y in pts:
                ax.annotate(_plain(label), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
            ax.set_xlabel(xlabel)
            ax.set_ylabel(quality)
            ax.set_title(f"{quality} vs {xlabel.split(' (')[0]}")
            ax.margins(0.15)
            if pts:
                ax.legend(loc="lower right", fontsize=8)
        return fig
    return _plot(draw)


def _bar_figure(names: list[str], values: list[float], *, title: str, ylabel: str, highlight: int | None = None,
                ylim: tuple[float, float] | None = None) -> str:
    def draw():
        fig, (ax,) = _figure(max(4.0, min(12.0, 0.45 * len(names) + 2)), 3.0)
        colors = [_BAD if i == highlight else _COMP for i in range(len(names))]
        bars = ax.bar(range(len(names)), values, color=colors)
        ax.bar_label(bars, labels=[f"{v:.3g}" for v in values], fontsize=7)
        ax.set_xticks(range(len(names)), [_plain(n) for n in names], rotation=45 if len(names) > 4 else 0,
                      ha="right" if len(names) > 4 else "center", fontsize=8)
        ax.set_title(_plain(title))
        ax.set_ylabel(ylabel)
        if ylim:
            ax.set_ylim(*ylim)
        else:
            ax.margins(y=0.15)
        return fig
    return _plot(draw)


# ---- sections ------------------------------------------------------------------------------------------------

def _table(header: Sequence[str], rows: Sequence[Sequence[str]], *, numeric_from: int = 1,
           row_classes: Sequence[str] | None = None) -> str:
    """``rows`` hold HTML already escaped."""
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = []
    for i, row in enumerate(rows):
        cls = f' class="{row_classes[i]}"' if row_classes and row_classes[i] else ""
        cells = "".join(f'<td class="n">{c}</td>' if j >= numeric_from else f"<td>{c}</td>" for j, c in enumerate(row))
        body.append(f"<tr{cls}>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _section(anchor: str, title: str, *parts: str | None) -> str:
    return f'<section id="{anchor}"><h2>{_e(title)}</h2>{"".join(p for p in parts if p)}</section>'


def _figure_html(svg: str | None, caption: str) -> str | None:
    return None if svg is None else f"<figure>{svg}<figcaption class=\"muted\">{_e(caption)}</figcaption></figure>"


def _ok(flag) -> str:
    if flag is None:
        return f'<span class="muted">{DASH}</span>'
    return '<span class="ok">✓ yes</span>' if flag else '<span class="bad">✗ no</span>'


def _recipe_summary(recipe: dict) -> str:
    stages = []
    for s in recipe.get("stages") or []:
        detail = ", ".join(f"{k} {s[k]}" for k in ("type", "sparsity", "strategy") if s.get(k) is not None)
        stages.append(f"{s.get('kind', '?')} ({detail})" if detail else str(s.get("kind", "?")))
    return " → ".join(stages) or "no stages (export only)"


def _header(report: dict) -> str:
    recipe, data, env = report.get("recipe") or {}, report.get("data") or {}, report.get("environment")
    base, opt, output = report.get("baseline") or {}, recipe.get("optimization") or {}, recipe.get("output") or {}
    model = report.get("model")
    model_text = (f"{model} · " if model else "") + (
        f"{fmt_count(base.get('params'))} parameters, {fmt_count(base.get('macs'))} MACs, "
        f"{base.get('format') or '?'} {fmt_bytes(base.get('size_bytes'))}")
    rows = [("model (original)", model_text), ("recipe", recipe.get("name") or "unnamed recipe"),
            ("description", recipe.get("description")), ("stages", _recipe_summary(recipe)),
            ("target device", opt.get("target_device")), ("output", output.get("format")),
            ("data", f"{data.get('name', '?')}: {data.get('train', '?')} train, {data.get('test', '?')} test"
                     + ("" if data.get("labelled", True) else ", unlabelled") if data else None),
            ("environment", cpu_summary(env) if isinstance(env, dict) else None)]
    body = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows if v is not None)
    version = report.get("edgecompress_version")
    return (f"<header><h1>edgecompress report</h1><p class=\"muted\">edgecompress {_e(version)}</p>"
            f"<table>{body}</table></header>")


def _summary(report: dict) -> str:
    base, comp, r = report.get("baseline") or {}, report.get("compressed") or {}, report.get("ratios") or {}
    lat = [(m.get("latency_ms") or {}).get("p50") for m in (base, comp)]
    torch_lat = [(m.get("torch_latency_ms") or {}).get("p50") for m in (base, comp)]
    quality = _quality_label(report)
    rows = [("artifact size", fmt_bytes(base.get("size_bytes")), fmt_bytes(comp.get("size_bytes")), r.get("size")),
            ("OTA size (gzip)", fmt_bytes(base.get("ota_bytes")), fmt_bytes(comp.get("ota_bytes")), r.get("ota_size")),
            ("params", fmt_count(base.get("params")), fmt_count(comp.get("params")), r.get("params")),
            ("MACs", fmt_count(base.get("macs")), fmt_count(comp.get("macs")), r.get("macs")),
            ("sparsity", fmt_percent(_num(base.get("sparsity"))), fmt_percent(_num(comp.get("sparsity"))), None),
            (quality, fmt_percent(_quality(base)), fmt_percent(_quality(comp)), r.get("accuracy_retention")),
            (f"latency p50 ({comp.get('runtime') or base.get('runtime') or 'runtime'}, batch 1, 1 thread)",
             _g(lat[0], " ms"), _g(lat[1], " ms"), r.get("latency")),
            ("PyTorch eager latency p50", _g(torch_lat[0], " ms"), _g(torch_lat[1], " ms"), r.get("torch_latency")),
            ("peak RAM (RSS)", _g(base.get("peak_rss_mb"), " MiB"), _g(comp.get("peak_rss_mb"), " MiB"),
             r.get("peak_rss"))]
    table = _table(("", "baseline", "compressed", "ratio (baseline ÷ compressed)"),
                   [(_e(a), _e(b), _e(c), _e(fmt_ratio(_finite(d)))) for a, b, c, d in rows])
    note = (f"<p class=\"muted\">{_e(quality)} retention is compressed ÷ baseline; the other ratios are "
            "baseline ÷ compressed (above 1: smaller or faster).</p>")
    return _section("summary", "Before and after", table, note,
                    _figure_html(_before_after_figure(report), "baseline and compressed artifact"))


def _tradeoffs(candidates: list[dict], quality: str) -> str:
    front_size = pareto_front([(c["size_bytes"], c["accuracy"]) for c in candidates])
    front_lat = pareto_front([(c["latency_ms"], c["accuracy"]) for c in candidates])
    rows = [(_e(c["label"]), _e(fmt_bytes(_finite(c["size_bytes"]))), _e(fmt_percent(_finite(c["accuracy"]))),
             _e(_g(c["latency_ms"], " ms")), _ok(fs), _ok(fl))
            for c, fs, fl in zip(candidates, front_size, front_lat, strict=True)]
    table = _table(("candidate", "size", quality, "latency p50", "Pareto: size", "Pareto: latency"), rows)
    note = (f"<p class=\"muted\">{len(candidates)} candidate(s). On the Pareto front: no other candidate is as small "
            f"(or as fast) with at least the same {_e(quality)}, and strictly better in one.</p>")
    return _section("tradeoffs", f"Trade-offs: {quality} against size and latency", note, _figure_html(
        _tradeoff_figure(candidates, quality), "every candidate tried; diamonds: the Pareto front"), table)


def _layer_sparsity(stages: list[dict]) -> str | None:
    parts = []
    for stage in stages:
        per_layer = stage.get("layer_sparsity")
        if isinstance(per_layer, dict) and per_layer:
            names = [str(k) for k in per_layer]
            values = [_finite(v) or 0.0 for v in per_layer.values()]
            parts.append(_figure_html(_bar_figure(names, values, title=f"{stage.get('name', '?')}: zero weights "
                                                  "per layer", ylabel="sparsity", ylim=(0, 1.05)),
                                      f"stage {stage.get('name', '?')}: fraction of exact zeros in each weight tensor"))
    return _section("sparsity", "Per-layer sparsity", *parts) if parts else None


def _bit_widths(stages: list[dict]) -> str | None:
    parts = []
    for stage in stages:
        rows = [r for r in stage.get("layers") or [] if isinstance(r, dict) and "layer" in r
                and _finite(r.get("weight_bits")) is not None]
        if rows:
            svg = _bar_figure([str(r["layer"]) for r in rows], [_finite(r["weight_bits"]) for r in rows],
                              title=f"{stage.get('name', '?')}: weight bits per layer", ylabel="weight bits",
                              ylim=(0, max(_finite(r["weight_bits"]) for r in rows) * 1.2))
            table = _table(("layer", "kind", "weight bits", "per channel"),
                           [(_e(r["layer"]), _e(r.get("kind")), _e(_g(r["weight_bits"])), _e(r.get("per_channel")))
                            for r in rows])
            activation = next((r for r in stage["layers"] if isinstance(r, dict) and "activation_dtype" in r), None)
            note = None if activation is None else (
                f"<p>activations: {_e(activation.get('activation_quantizers'))} quantizers, "
                f"{_e(activation['activation_dtype'])}</p>")
            parts += [_figure_html(svg, f"stage {stage.get('name', '?')}: bit-width of each quantized layer"), note,
                      table]
    return _section("bits", "Per-layer bit-widths", *parts) if parts else None


_TARGET_LABELS = {"max_size_mb": ("size ≤", " MB"), "max_latency_ms": ("latency p50 ≤", " ms"),
                  "min_accuracy": ("accuracy ≥", ""), "min_top1_agreement": ("top-1 agreement ≥", ""),
                  "target_flops": ("FLOPs ≤", "")}


def _targets(report: dict) -> str:
    targets = report.get("targets") or []
    if not targets:
        return _section("targets", "Targets", "<p class=\"muted\">the recipe sets no targets</p>")
    rows = []
    for t in targets:
        label, unit = _TARGET_LABELS.get(t.get("name"), (str(t.get("name")), ""))
        rows.append((_e(label), _e(_g(t.get("limit"), unit)), _e(_g(t.get("value"), unit)),
                     '<span class="ok">✓ met</span>' if t.get("met") else '<span class="bad">✗ not met</span>'))
    return _section("targets", "Targets", _table(("target", "limit", "compressed", "met"), rows))


def _check_value(value) -> str:
    if isinstance(value, list):
        return ", ".join(str(v) for v in value) or "none"
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else str(value)


def _device(report: dict) -> str | None:
    device = report.get("device")
    if not isinstance(device, dict):
        return None
    title = f"Device fit: {device.get('target_device', '?')}"
    if device.get("not_checked"):
        return _section("device", title, f"<p>not checked: {_e(device['not_checked'])}</p>")
    base = device.get("baseline") or {}
    fit = _table(("", "baseline", "compressed"), [
        ("profile", "", _e(f"{device.get('profile')} v{device.get('profile_version')}")),
        ("flash needed", _e(fmt_bytes(base.get("flash_bytes"))), _e(fmt_bytes(device.get("flash_bytes")))),
        ("RAM needed", _e(fmt_bytes(base.get("peak_ram_bytes"))), _e(fmt_bytes(device.get("peak_ram_bytes")))),
        ("fits (flash and RAM)", _ok(base.get("fits")), _ok(device.get("fits"))),
        ("supported (format, operators, types)", _ok(base.get("supported")), _ok(device.get("supported")))])
    checks = _table(("check", "value", "limit", "ok"), [
        (_e(c.get("name")), _e(_check_value(c.get("value"))), _e(_check_value(c.get("limit"))), _ok(c.get("ok")))
        for c in device.get("checks") or []], numeric_from=4)
    reasons = "".join(f"<li>{_e(r)}</li>" for r in device.get("reasons") or [])
    notes = "".join(f"<li>{_e(n)}</li>" for n in device.get("notes") or [])
    energy = device.get("energy")
    energy_html = None if not isinstance(energy, dict) else (
        f"<p>energy per inference (estimate): {_e(_g(energy.get('total_uj'), ' µJ'))} — compute "
        f"{_e(_g(energy.get('compute_uj'), ' µJ'))}, weight memory {_e(_g(energy.get('weight_memory_uj'), ' µJ'))}, "
        f"activation memory {_e(_g(energy.get('activation_memory_uj'), ' µJ'))}. "
        f"<span class=\"muted\">{_e(energy.get('source'))}</span></p>")
    return _section("device", title, fit, checks, f"<ul class=\"bad\">{reasons}</ul>" if reasons else None,
                    f"<ul>{notes}</ul>" if notes else None, energy_html, _ram_plan(device.get("arena")))


def _op_label(op: dict) -> str:
    return f"{op.get('op', '?')} {op['layer']}" if op.get("layer") else str(op.get("op", "?"))


def _ram_plan(arena) -> str | None:
    if not isinstance(arena, dict) or not arena.get("ops"):
        return None
    ops = [o for o in arena["ops"] if isinstance(o, dict)]
    live = [_finite(o.get("live_bytes")) or 0.0 for o in ops]
    peak = max(range(len(ops)), key=live.__getitem__) if ops else None
    names = [f"{o.get('index', i)}: {_op_label(o)}" for i, o in enumerate(ops)]
    svg = _bar_figure(names, live, title="activation bytes alive during each op", ylabel="bytes", highlight=peak)
    summary = (f"<p>tensor arena {_e(fmt_bytes(arena.get('arena_bytes')))} (alignment {_e(arena.get('alignment'))} "
               f"bytes); peak live {_e(fmt_bytes(arena.get('peak_live_bytes')))} at <b>{_e(arena.get('peak_op'))}</b>"
               "</p>")
    table = _table(("#", "op", "layer", "live bytes"),
                   [(_e(o.get("index")), _e(o.get("op")), _e(o.get("layer")), _e(_check_value(o.get("live_bytes"))))
                    for o in ops], numeric_from=3, row_classes=["peak" if i == peak else "" for i in range(len(ops))])
    return ("<h3>RAM plan (batch 1)</h3>" + summary
            + _figure_html(svg, "live bytes per op; red: the peak op, which sets the activation RAM") + table)


def _stages(report: dict) -> str | None:
    stages = report.get("stages") or []
    if not stages:
        return None
    rows = [(_e(s.get("name")), _e(_g(s.get("seconds"), " s"))) for s in stages]
    total = sum(_finite(s.get("seconds")) or 0.0 for s in stages)
    return _section("stages", "Stage timings", _table(("stage", "seconds"), rows + [("<b>total</b>",
                                                                                      _e(_g(total, " s")))]))


def _artifacts(report: dict) -> str | None:
    artifacts = report.get("artifacts") or []
    if not artifacts:
        return None
    rows = []
    for a in artifacts:
        parity = a.get("parity") or {}
        rows.append((_e(a.get("role")), _e(f"{a.get('format')} ({a.get('scheme')})"),
                     _e(Path(str(a.get("path", DASH))).name), _e(fmt_bytes(a.get("size_bytes"))),
                     _e(f"top-1 {fmt_percent(_finite(parity.get('top1_agreement')))}, "
                        f"SQNR {_g(parity.get('sqnr_db'), ' dB')}"), f"<code>{_e(a.get('sha256'))}</code>"))
    registry = report.get("registry")
    reg = None if not isinstance(registry, dict) else (
        f"<p class=\"muted\">registered as record <code>{_e(registry.get('record_id'))}</code> in "
        f"{_e(registry.get('root'))}</p>")
    return _section("artifacts", "Artifacts", _table(
        ("role", "format", "file", "size", "parity (runtime vs PyTorch)", "SHA-256"), rows, numeric_from=3), reg)


def _warnings(report: dict) -> str | None:
    items = "".join(f"<li>{_e(w)}</li>" for w in report.get("warnings") or [])
    return _section("warnings", "Warnings", f"<ul>{items}</ul>") if items else None


def render_html(report: dict, candidates: Sequence[dict] | None = None) -> str:
    """The report as one self-contained HTML page. ``candidates``: every model tried, each {label,
    size_bytes, accuracy, latency_ms} (accuracy a fraction, latency the p50 in ms; None where not measured);
    default: the report's baseline and compressed model (``report_candidates``)."""
    if not isinstance(report, dict):
        raise DataError(f"a report is a dict (as report.json holds it), got {type(report).__name__}")
    candidates = report_candidates(report) if candidates is None else _check_candidates(candidates)
    stages = [s for s in report.get("stages") or [] if isinstance(s, dict)]
    title = f"edgecompress report — {(report.get('recipe') or {}).get('name') or 'unnamed recipe'}"
    body = [_header(report), _summary(report), _tradeoffs(candidates, _quality_label(report)),
            _layer_sparsity(stages), _bit_widths(stages), _targets(report), _device(report), _stages(report),
            _artifacts(report), _warnings(report)]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>\n"
            + "\n".join(b for b in body if b) + "\n</body></html>\n")


def write_html_report(report: dict, path: str | os.PathLike[str], candidates: Sequence[dict] | None = None) -> Path:
    """Render ``report`` to ``path`` atomically. The report goes through the same JSON form report.json holds
    first, so the page made at the end of a run and one re-made later from report.json are the same bytes."""
    report = json.loads(json_bytes(report))
    return atomic_write_bytes(path, render_html(report, candidates).encode("utf-8"))
