"""Foundation benchmark: for each reference model, the float ONNX baseline vs INT8 PTQ vs 50 % magnitude
pruning + fine-tuning + INT8, all measured on the ONNX Runtime artifact. Prints a table, writes JSON.

    .venv/bin/python benchmarks/run.py [--models mnist1d_cnn digits_cnn ...] [--out benchmarks/results/foundation.json]
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

DEFAULT_MODELS = ["mnist1d_cnn", "digits_cnn", "mobilenetv2_mnist1d", "resnet_mnist1d"]

INT8 = {"quantization": {"enabled": True, "type": "int8", "calibration_samples": 500, "observer": "minmax"},
        "output": {"format": "onnx"}}
PRUNE50_INT8 = {
    "pruning": {"enabled": True, "type": "magnitude", "sparsity": 0.5, "iterative": True, "iterations": 2,
                "fine_tune_epochs": 2},
    **INT8,
}
RECIPES = {"int8": INT8, "prune50+int8": PRUNE50_INT8}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", nargs="+", default=DEFAULT_MODELS)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "foundation.json")
    args = parser.parse_args()
    console = Console(width=200)  # a readable table in logs and CI, not only in a terminal
    rows = []
    settings = MeasureSettings(iters=200, warmup=20, max_seconds=10.0)
    for name in args.models:
        loaded = load_model(f"builtin:{name}")
        for label, recipe in RECIPES.items():
            started = time.perf_counter()
            with warnings.catch_warnings(), tempfile.TemporaryDirectory() as tmp:
                warnings.simplefilter("ignore")
                result = compress(loaded.model, recipe, data=loaded.dataset, example_inputs=loaded.example_inputs,
                                  out_dir=tmp, measure=settings)
            r = result.report
            parity = r["artifacts"][1]["parity"]
            if label == "int8":
                rows.append(_row(name, "fp32 (baseline)", r["baseline"], None, None))
            rows.append(_row(name, label, r["compressed"], r["ratios"], parity,
                             seconds=time.perf_counter() - started))
            console.print(f"done {name} / {label}")
    _print(console, rows)
    write_json_atomic(args.out, {"environment": environment(), "rows": rows})
    console.print(f"wrote {args.out}")


def _row(model, variant, m, ratios, parity, seconds=None) -> dict:
    return {
        "model": model, "variant": variant,
        "accuracy_runtime": m["accuracy"], "accuracy_simulation": m.get("simulation_accuracy"),
        "size_bytes": m["size_bytes"], "ota_bytes": m["ota_bytes"], "params": m["params"], "macs": m["macs"],
        "sparsity": m["sparsity"],
        "latency_b1_t1_p50_ms": m["latency_detail"]["b1_t1"]["p50"],
        "latency_b1_t1_p90_ms": m["latency_detail"]["b1_t1"]["p90"],
        "latency_bN_t1_p50_ms": m["latency_detail"]["bN_t1"]["p50"],
        "size_ratio": None if ratios is None else ratios["size"],
        "ota_ratio": None if ratios is None else ratios["ota_size"],
        "speedup_b1": None if ratios is None else ratios["latency"],
        "accuracy_drop_points": None if ratios is None else 100 * ratios["accuracy_drop"],
        "parity_top1_agreement": None if parity is None else parity["top1_agreement"],
        "parity_sqnr_db": None if parity is None else parity["sqnr_db"],
        "wall_seconds": seconds,
    }


def _fmt(v, spec):
    return "–" if v is None else format(v, spec)


def _print(console: Console, rows: list[dict]) -> None:
    table = Table(title="edgecompress foundation benchmark (ONNX Runtime, CPU EP)")
    for col in ("model", "variant", "acc (ORT)", "Δacc pts", "size", "×size", "OTA", "×OTA",
                "p50 b1 1t ms", "×speed", "p50 b32 1t ms", "parity top1", "parity SQNR dB"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["model"], r["variant"], _fmt(r["accuracy_runtime"], ".4f"),
                      _fmt(r["accuracy_drop_points"], "+.2f"), f"{r['size_bytes'] / 1024:.1f} KB",
                      _fmt(r["size_ratio"], ".2f"), f"{r['ota_bytes'] / 1024:.1f} KB", _fmt(r["ota_ratio"], ".2f"),
                      _fmt(r["latency_b1_t1_p50_ms"], ".4f"), _fmt(r["speedup_b1"], ".2f"),
                      _fmt(r["latency_bN_t1_p50_ms"], ".3f"), _fmt(r["parity_top1_agreement"], ".4f"),
                      _fmt(r["parity_sqnr_db"], ".1f"))
    console.print(table)
    console.print(f"CPU: {cpu_summary()}")


if __name__ == "__main__":
    main()
