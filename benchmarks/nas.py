"""DARTS (N2) on MNIST-1D with a fixed budget: search, derive, train the derived network from scratch, and compare
it with the reference MNIST-1D CNN (parameters, MACs, test accuracy in PyTorch and in ONNX Runtime).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/nas.py [--epochs 4] [--train-epochs 40]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from edgecompress.datasets import load_dataset
from edgecompress.export import get_exporter
from edgecompress.fileio import write_json_atomic
from edgecompress.layers import count_macs
from edgecompress.measure import count_params, cpu_summary, environment
from edgecompress.model_io import load_model
from edgecompress.nas import DartsConfig, DartsResult, derive, search_architecture, train_derived
from edgecompress.training import evaluate_accuracy


def _onnx_accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    exporter = get_exporter("onnx")
    with tempfile.TemporaryDirectory() as tmp:
        path = exporter.export(model.eval(), model.example_inputs(), Path(tmp) / "model.onnx", scheme="fp32").path
        run = exporter.runner(path, threads=1)
        predictions = np.concatenate([run(x[i:i + 256].numpy()).argmax(1) for i in range(0, len(x), 256)])
    return float((predictions == y.numpy()).mean())


def _row(name: str, model: torch.nn.Module, data, seconds: float | None) -> dict:
    return {"model": name, "params": count_params(model), "macs": count_macs(model, model.example_inputs()),
            "accuracy": evaluate_accuracy(model, data.x_test, data.y_test),
            "accuracy_onnxruntime": _onnx_accuracy(model, data.x_test, data.y_test), "search_seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=4, help="search epochs")
    parser.add_argument("--train-epochs", type=int, default=30, help="training epochs of the derived network")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "nas.json")
    args = parser.parse_args()
    console = Console()
    data = load_dataset("builtin:mnist1d")
    config = DartsConfig(epochs=args.epochs, cells=3, channels=8, nodes=4, batch_size=128,
                         train_epochs=args.train_epochs, seed=0)
    started = time.perf_counter()
    network, history, losses = search_architecture(data, config)  # the steps of nas.search, timed and printed
    genotype = derive(network)
    searched = time.perf_counter()
    console.print(f"search {searched - started:.0f} s, losses {losses}, genotype {genotype}")
    model = train_derived(genotype, data, config)
    trained = time.perf_counter()
    result = DartsResult(genotype=genotype, alphas_history=history, model=model, ops=config.ops, losses=losses,
                         accuracy=evaluate_accuracy(model, data.x_test, data.y_test), search_seconds=searched - started,
                         train_seconds=trained - searched)
    console.print(f"training {result.train_seconds:.0f} s, test accuracy {result.accuracy:.4f}")
    reference = load_model("builtin:mnist1d_cnn")
    rows = [_row("DARTS derived", result.model, data, result.search_seconds),
            _row("reference mnist1d_cnn", reference.model, data, None)]
    table = Table(title=f"DARTS on MNIST-1D ({config.epochs} search epochs) — {cpu_summary()}")
    for column in ("model", "search s", "params", "MACs", "test acc", "test acc (ORT)"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for r in rows:
        table.add_row(r["model"], "–" if r["search_seconds"] is None else f"{r['search_seconds']:.0f}",
                      f"{r['params']:,}", f"{r['macs']:,}", f"{r['accuracy']:.4f}", f"{r['accuracy_onnxruntime']:.4f}")
    console.print(table)
    final = result.alphas_history[-1]
    write_json_atomic(args.out, {
        "config": asdict(config), "genotype": result.genotype.to_dict(), "rows": rows,
        "search_losses": [list(pair) for pair in result.losses], "train_seconds": result.train_seconds,
        "final_alphas": {kind: final[kind].tolist() for kind in final}, "ops": list(result.ops),
        "wall_seconds": time.perf_counter() - started, "environment": environment()})
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
