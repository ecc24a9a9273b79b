"""Markdown tables for the README from the benchmarks' JSON files, so that every figure there comes from a run.

    .venv/bin/python benchmarks/tables.py foundation|quantization|pruning
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def _f(value, spec: str) -> str:
    if value is None:
        return "–"
    if value == "inf":
        return "∞"
    return format(value, spec).replace("-", "−")


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def foundation() -> str:
    rows = json.loads((RESULTS / "foundation.json").read_text())["rows"]
    header = ["model", "variant", "acc (ORT)", "Δacc pts", "size KB", "×size", "OTA KB", "×OTA", "p50 b1 ms",
              "×speed b1", "p50 b32 ms", "parity top-1", "parity SQNR dB"]
    body = [[r["model"], r["variant"].replace("prune50+int8", "prune 50 % + int8"), _f(r["accuracy_runtime"], ".4f"),
             _f(None if r["accuracy_drop_points"] is None else 0.0 - r["accuracy_drop_points"], "+.2f"),
             _f(r["size_bytes"] / 1024, ".1f"), _f(r["size_ratio"], ".2f"), _f(r["ota_bytes"] / 1024, ".1f"),
             _f(r["ota_ratio"], ".2f"), _f(r["latency_b1_t1_p50_ms"], ".4f"), _f(r["speedup_b1"], ".2f"),
             _f(r["latency_bN_t1_p50_ms"], ".3f"), _f(r["parity_top1_agreement"], ".4f"),
             _f(r["parity_sqnr_db"], ".1f")] for r in rows]
    return _table(header, body)


def quantization() -> str:
    data = json.loads((RESULTS / "quantization.json").read_text())
    out = []
    for model in dict.fromkeys(r["model"] for r in data["rows"]):
        rows = [r for r in data["rows"] if r["model"] == model and r["status"] == "ok"]
        if model == "minilm":
            header = ["variant", "source", "kind", "cos mean", "cos min", "R@1", "ΔR@1 pts", "size MB", "×fp32",
                      "p50 b1 ms", "quantize s"]
            body = [[r["variant"], r["source"], r["kind"], _f(r["cosine_mean"], ".4f"), _f(r["cosine_min"], ".4f"),
                     _f(r["recall@1"], ".3f"), _f(r["change_points"], "+.2f"), _f(r["size_bytes"] / 1e6, ".2f"),
                     _f(r["size_vs_fp32_onnx"], ".3f"), _f(r["latency_b1_p50_ms"], ".1f"),
                     _f(r.get("quantize_seconds"), ".1f")] for r in rows]
        else:
            header = ["variant", "source", "kind", "acc (runtime)", "Δacc pts", "size KB", "×fp32", "p50 b1 ms",
                      "quantize s"]
            body = [[r["variant"], r["source"], r["kind"], _f(r["accuracy"], ".4f"), _f(r["change_points"], "+.2f"),
                     _f(r["size_bytes"] / 1024, ".1f"), _f(r["size_vs_fp32_onnx"], ".3f"),
                     _f(r["latency_b1_p50_ms"], ".3f"), _f(r.get("quantize_seconds"), ".2f")] for r in rows]
        out.append(f"**{model}**\n\n" + _table(header, body))
        missing = [r for r in data["rows"] if r["model"] == model and r["status"] != "ok"]
        if missing:
            out.append("\n".join(f"- {r['variant']}: {r['status']} — {r.get('detail', '')}" for r in missing))
    goals = data.get("goals", [])
    if goals:
        out.append("\n".join(f"- {g['goal']}: {'met' if g.get('met') else 'NOT met'} "
                             f"({', '.join(f'{k} {v}' for k, v in g.items() if k not in ('goal', 'met'))})"
                             for g in goals))
    return "\n\n".join(out)


def pruning() -> str:
    data = json.loads((RESULTS / "pruning.json").read_text())
    header = ["model", "variant", "acc (ORT)", "Δacc pts", "params", "MACs", "×MACs", "size KB", "×size", "OTA KB",
              "×OTA", "p50 b1 ms", "×speed b1", "p50 b32 ms"]
    body = [[r["model"], r["variant"], _f(r["accuracy_runtime"], ".4f"), _f(r["accuracy_change_points"], "+.2f"),
             f"{r['params']:,}", f"{r['macs']:,}", _f(r["macs_ratio"], ".2f"), _f(r["size_bytes"] / 1024, ".1f"),
             _f(r["size_ratio"], ".2f"), _f(r["ota_bytes"] / 1024, ".1f"), _f(r["ota_ratio"], ".2f"),
             _f(r["latency_b1_t1_p50_ms"], ".4f"), _f(r["speedup_b1"], ".2f"), _f(r["latency_bN_t1_p50_ms"], ".3f")]
            for r in data["rows"]]
    goals = "\n".join(f"- {g['model']}: {g['goal']}: {g['value']:.3f} → {'met' if g['met'] else 'NOT met'}"
                      for g in data["goals"])
    return _table(header, body) + "\n\n" + goals


def distill_lowrank() -> str:
    data = json.loads((RESULTS / "distill_lowrank.json").read_text())
    out = []
    kd = data.get("distillation")
    if kd:
        body = [[r["variant"], f"{r['student_params']:,}", ", ".join(f"{a:.3f}" for a in r["accuracies"]),
                 _f(r["mean"], ".4f"), _f(r["stdev"], ".4f"), _f(r["gain_points"], "+.2f")] for r in kd["rows"]]
        t = kd["training"]
        out.append(f"Teacher {kd['rows'][0]['teacher_params']:,} parameters, {kd['teacher_accuracy']:.3f} in ONNX "
                   f"Runtime; every student trained like the teacher ({t['epochs']} epochs, lr {t['lr']:g}, batch "
                   f"{t['batch_size']}, weight decay {t['weight_decay']:g}), seeds {', '.join(map(str, kd['seeds']))}."
                   "\n\n"
                   + _table(["student training", "params", "accuracy per seed", "mean", "stdev", "vs scratch pts"],
                            body))
    for key, title in (("low_rank", "low-rank"), ("clustering", "clustering")):
        rows = data.get(key)
        if rows:
            body = [[r["model"], r["variant"], _f(r["accuracy_float"], ".4f"), _f(r["accuracy"], ".4f"),
                     f"{r['params']:,}", _f(r["params_ratio"], ".2f"), _f(r["macs_ratio"], ".2f"),
                     _f(r["size_bytes"] / 1024, ".1f"), _f(r["size_ratio"], ".2f"), _f(r["ota_ratio"], ".2f"),
                     _f(r["latency_float_b1_ms"], ".4f"), _f(r["latency_b1_ms"], ".4f")] for r in rows]
            out.append(f"**{title}**\n\n" + _table(
                ["model", "variant", "acc float", "acc (ORT)", "params", "params ×", "MACs ×", "size KB",
                 "×size", "×OTA", "p50 b1 float ms", "p50 b1 ms"], body))
    rows = data.get("minilm_svd")
    if rows:
        body = [[_f(r["rank_ratio"], ".2f"), f"{r['params']:,}", _f(r["params_ratio"], ".3f"),
                 _f(r["cosine_mean"], ".4f"), _f(r["cosine_min"], ".4f")] for r in rows]
        out.append("**all-MiniLM-L6-v2, SVD of the 12 feed-forward layers, no fine-tuning**\n\n" + _table(
            ["rank ratio", "params", "× params", "cos mean", "cos min"], body))
    return "\n\n".join(out)


if __name__ == "__main__":
    print({"foundation": foundation, "quantization": quantization, "pruning": pruning,
           "distill_lowrank": distill_lowrank}[sys.argv[1]]())
