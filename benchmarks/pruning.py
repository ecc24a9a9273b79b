"""Pruning benchmark: unstructured 50/70/90 % (gradual, fine-tuned) and structured 30/50 % (channels physically
removed, fine-tuned), each alone and followed by INT8, on the MNIST-1D CNN and the MobileNetV2- and ResNet-style
reference nets trained on MNIST-1D. Everything is measured on the ONNX Runtime artifact: accuracy, parameters,
MACs, file bytes, gzip ("OTA") bytes, latency at batch 1 and 32. Prints a table, writes JSON.

    .venv/bin/python benchmarks/pruning.py [--models mnist1d_cnn ...] [--variants structured ...]
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

from rich.console import Console
from rich.table import Table

from edgecompress import MeasureSettings, compress
from edgecompress.fileio import write_json_atomic
from edgecompress.measure import cpu_summary, environment
from edgecompress.model_io import load_model

DEFAULT_MODELS = ["mnist1d_cnn", "mobilenetv2_mnist1d", "resnet_mnist1d"]
INT8 = {"enabled": True, "type": "int8", "calibration_samples": 500}


def _unstructured(sparsity: float) -> dict:
    # gradual (AGP) pruning with fine-tuning after each step; more steps for higher sparsity
    iterations = {0.5: 2, 0.7: 3, 0.9: 4}[sparsity]
    return {"enabled": True, "type": "magnitude", "sparsity": sparsity, "iterative": True,
            "iterations": iterations, "schedule": "polynomial", "fine_tune_epochs": 3}


def _structured(ratio: float) -> dict:
    # channels removed in two steps (L2 importance, one global ranking), fine-tuned after each
    return {"enabled": True, "type": "structured", "sparsity": ratio, "importance": "l2", "scope": "global",
            "iterative": True, "iterations": 2, "fine_tune_epochs": 5}


PRUNINGS = {"unstructured 50 %": _unstructured(0.5), "unstructured 70 %": _unstructured(0.7),
            "unstructured 90 %": _unstructured(0.9), "structured 30 %": _structured(0.3),
            "structured 50 %": _structured(0.5)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", nargs="+", default=DEFAULT_MODELS)
    parser.add_argument("--variants", nargs="+", default=None, help="run only variants whose name contains one")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "pruning.json")
    args = parser.parse_args()
    console = Console(width=220)
    settings = MeasureSettings(iters=200, warmup=20, max_seconds=10.0)
    rows: list[dict] = []
    for name in args.models:
        loaded = load_model(f"builtin:{name}")
        for label, section in PRUNINGS.items():
            if args.variants and not any(v in label for v in args.variants):
                continue
            with warnings.catch_warnings(), tempfile.TemporaryDirectory() as tmp:
                warnings.simplefilter("ignore")
                started = time.perf_counter()
                pruned = compress(loaded.model, {"pruning": section, "output": {"format": "onnx"}},
                                  data=loaded.dataset, example_inputs=loaded.example_inputs, out_dir=Path(tmp) / "p",
                                  measure=settings)
                seconds = time.perf_counter() - started
                baseline = pruned.report["baseline"]
                if not rows or rows[-1]["model"] != name:
                    rows.append(_row(name, "fp32 (baseline)", baseline, baseline))
                rows.append(_row(name, label, pruned.report["compressed"], baseline, seconds=seconds))
                # INT8 of the same pruned model, against the same float baseline
                quantized = compress(pruned.model, {"quantization": INT8, "output": {"format": "onnx"}},
                                     data=loaded.dataset, example_inputs=loaded.example_inputs,
                                     out_dir=Path(tmp) / "q", measure=settings)
                rows.append(_row(name, f"{label} + int8", quantized.report["compressed"], baseline,
                                 parity=quantized.report["artifacts"][1]["parity"]))
            console.print(f"done {name} / {label}")
    _print(console, rows)
    write_json_atomic(args.out, {"environment": environment(), "rows": rows, "goals": goals(rows)})
    console.print(f"wrote {args.out}")


def _row(model: str, variant: str, m: dict, base: dict, *, seconds: float | None = None,
         parity: dict | None = None) -> dict:
    b1, base_b1 = m["latency_detail"]["b1_t1"]["p50"], base["latency_detail"]["b1_t1"]["p50"]
    return {
        "model": model, "variant": variant, "accuracy_runtime": m["accuracy"], "params": m["params"],
        "macs": m["macs"], "sparsity": m["sparsity"], "size_bytes": m["size_bytes"], "ota_bytes": m["ota_bytes"],
        "latency_b1_t1_p50_ms": b1, "latency_bN_t1_p50_ms": m["latency_detail"]["bN_t1"]["p50"],
        "size_ratio": base["size_bytes"] / m["size_bytes"], "ota_ratio": base["ota_bytes"] / m["ota_bytes"],
        "speedup_b1": base_b1 / b1, "macs_ratio": base["macs"] / m["macs"] if m["macs"] else None,
        "accuracy_change_points": 100 * (m["accuracy"] - base["accuracy"]),
        "accuracy_retention": m["accuracy"] / base["accuracy"],
        "parity_top1_agreement": None if parity is None else parity["top1_agreement"],
        "wall_seconds": seconds,
    }


def goals(rows: list[dict]) -> list[dict]:
    """The issue's goals, per model: structured 50 % ≥ 1.6× faster at batch 1 within 1 point; unstructured
    90 % + INT8 ≥ 10× smaller OTA than float32 with ≥ 97 % accuracy retention."""
    found = []
    for model in dict.fromkeys(r["model"] for r in rows):
        by_variant = {r["variant"]: r for r in rows if r["model"] == model}
        s = by_variant.get("structured 50 %")
        if s is not None:
            found.append({"model": model, "goal": "structured 50 %: ORT batch-1 speed-up >= 1.6x",
                          "value": s["speedup_b1"], "met": s["speedup_b1"] >= 1.6})
            found.append({"model": model, "goal": "structured 50 %: accuracy within 1 point after fine-tuning",
                          "value": s["accuracy_change_points"], "met": s["accuracy_change_points"] >= -1.0})
        u = by_variant.get("unstructured 90 % + int8")
        if u is not None:
            found.append({"model": model, "goal": "unstructured 90 % + int8: OTA >= 10x smaller than float32",
                          "value": u["ota_ratio"], "met": u["ota_ratio"] >= 10.0})
            found.append({"model": model, "goal": "unstructured 90 % + int8: accuracy retention >= 97 %",
                          "value": u["accuracy_retention"], "met": u["accuracy_retention"] >= 0.97})
    return found


def _fmt(v, spec):
    return "–" if v is None else format(v, spec)


def _print(console: Console, rows: list[dict]) -> None:
    table = Table(title="edgecompress pruning benchmark (ONNX Runtime, CPU EP, one thread)")
    for col in ("model", "variant", "acc (ORT)", "Δacc pts", "params", "MACs", "×MACs", "size", "×size", "OTA",
                "×OTA", "p50 b1 ms", "×speed b1", "p50 b32 ms"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["model"], r["variant"], _fmt(r["accuracy_runtime"], ".4f"),
                      _fmt(r["accuracy_change_points"], "+.2f"), f"{r['params']:,}", f"{r['macs']:,}",
                      _fmt(r["macs_ratio"], ".2f"), f"{r['size_bytes'] / 1024:.1f} KB", _fmt(r["size_ratio"], ".2f"),
                      f"{r['ota_bytes'] / 1024:.1f} KB", _fmt(r["ota_ratio"], ".2f"),
                      _fmt(r["latency_b1_t1_p50_ms"], ".4f"), _fmt(r["speedup_b1"], ".2f"),
                      _fmt(r["latency_bN_t1_p50_ms"], ".3f"))
    console.print(table)
    for g in goals(rows):
        console.print(f"{g['model']}: {g['goal']}: {g['value']:.3f} → {'met' if g['met'] else 'NOT met'}")
    console.print(f"CPU: {cpu_summary()}")


if __name__ == "__main__":
    main()
