"""Distillation, low-rank factorization and weight clustering, measured on the ONNX Runtime artifact.

1. MNIST-1D: a student 4.4× smaller than the paper's CNN, trained from scratch, with response KD and with KD +
   feature distillation, 3 seeds each, all with the teacher's training recipe (mean and spread of test accuracy
   in ONNX Runtime).
2. Low-rank at half the parameters (SVD of Linear / 1×1, Tucker-2 of k×k convs, stem kept), fine-tuned:
   accuracy, MACs, file bytes, latency, on the MNIST-1D CNN and the ResNet-style net.
3. Weight clustering at 16 and 4 centroids, fine-tuned: accuracy and file bytes.
4. all-MiniLM-L6-v2: SVD of the feed-forward layers at a few ranks, no fine-tuning: parameters vs cosine fidelity.

    .venv/bin/python benchmarks/distill_lowrank.py [--parts kd lowrank clustering minilm]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from rich.console import Console

from edgecompress import MeasureSettings, compress
from edgecompress.datasets import load_dataset
from edgecompress.distillation import DistillConfig, Distiller, make_student
from edgecompress.export import get_exporter
from edgecompress.fileio import write_json_atomic
from edgecompress.measure import count_params, cpu_summary, environment
from edgecompress.model_io import load_model
from edgecompress.models.registry import model_info
from edgecompress.training import fit

SEEDS = (0, 1, 2)


def _onnx_accuracy(model: torch.nn.Module, example_inputs, x: torch.Tensor, y: torch.Tensor, workdir: Path) -> float:
    exporter = get_exporter("onnx")
    path = exporter.export(model.eval(), example_inputs, workdir / "student.onnx", scheme="fp32").path
    run = exporter.runner(path, threads=1)
    predictions = np.concatenate([np.asarray(run(x[i:i + 256].numpy())).argmax(1) for i in range(0, len(x), 256)])
    return float((predictions == y.numpy()).mean())


def knowledge_distillation(console: Console) -> dict:
    """Students are trained the way the teacher was (its registry recipe: epochs, learning rate, batch size,
    weight decay), so that the comparison is between losses, not between training budgets."""
    loaded = load_model("builtin:mnist1d_cnn")
    teacher, data = loaded.model, load_dataset(loaded.dataset)
    info = model_info("mnist1d_cnn")
    recipe = {"epochs": info.epochs, "lr": info.lr, "batch_size": info.batch_size, "weight_decay": info.weight_decay}
    x, y = torch.as_tensor(data.x_test).float(), torch.as_tensor(data.y_test).long()
    configs = {"from scratch": None,
               "KD (T=4, α=0.7)": DistillConfig(temperature=4.0, alpha=0.7),
               "KD + feature (conv3 → conv3)": DistillConfig(temperature=4.0, alpha=0.7,
                                                             feature_pairs=(("conv3", "conv3"),))}
    rows = []
    for label, config in configs.items():
        accuracies = []
        for seed in SEEDS:
            student = make_student(teacher, width=0.4, seed=seed)
            with tempfile.TemporaryDirectory() as tmp:
                if config is None:
                    fit(student, data, seed=seed, **recipe)
                else:
                    with Distiller(teacher, student, config, example_inputs=loaded.example_inputs) as distiller:
                        fit(distiller.model, data, seed=seed, loss_fn=distiller.loss_fn, **recipe)
                        student = distiller.finalize()
                accuracies.append(_onnx_accuracy(student, loaded.example_inputs, x, y, Path(tmp)))
        rows.append({"variant": label, "student_params": count_params(student), "teacher_params": count_params(teacher),
                     "accuracies": accuracies, "mean": statistics.mean(accuracies),
                     "stdev": statistics.stdev(accuracies)})
        console.print(f"KD / {label}: {rows[-1]['mean']:.4f} ± {rows[-1]['stdev']:.4f}")
    scratch = rows[0]["mean"]
    for row in rows:
        row["gain_points"] = 100 * (row["mean"] - scratch)
    return {"teacher_accuracy": _onnx_accuracy(teacher, loaded.example_inputs, x, y, Path(tempfile.mkdtemp())),
            "training": recipe, "seeds": list(SEEDS), "rows": rows}


def _compressed_row(name: str, label: str, recipe: dict, settings: MeasureSettings) -> dict:
    loaded = load_model(f"builtin:{name}")
    with warnings.catch_warnings(), tempfile.TemporaryDirectory() as tmp:
        warnings.simplefilter("ignore")
        started = time.perf_counter()
        r = compress(loaded.model, {**recipe, "output": {"format": "onnx"}}, data=loaded.dataset,
                     example_inputs=loaded.example_inputs, out_dir=tmp, measure=settings).report
    b, c = r["baseline"], r["compressed"]
    return {"model": name, "variant": label, "accuracy_float": b["accuracy"], "accuracy": c["accuracy"],
            "params": c["params"], "params_ratio": c["params"] / b["params"], "macs": c["macs"],
            "macs_ratio": c["macs"] / b["macs"], "size_bytes": c["size_bytes"],
            "size_ratio": b["size_bytes"] / c["size_bytes"], "ota_ratio": b["ota_bytes"] / c["ota_bytes"],
            "latency_b1_ms": c["latency_ms"]["p50"], "latency_float_b1_ms": b["latency_ms"]["p50"],
            "wall_seconds": time.perf_counter() - started}


def low_rank(console: Console, settings: MeasureSettings) -> list[dict]:
    rows = []
    for name, stem in (("mnist1d_cnn", "conv1"), ("resnet_mnist1d", "conv1")):
        for label, section in (
                ("svd + tucker, 50 % params", {"method": "auto", "param_ratio": 0.5}),
                ("tucker, energy 0.9", {"method": "tucker", "energy": 0.9})):
            recipe = {"lowrank": {"enabled": True, "ignore": [stem], "fine_tune_epochs": 5, "learning_rate": 5e-3,
                                  **section}}
            rows.append(_compressed_row(name, label, recipe, settings))
            console.print(f"low-rank / {name} / {label}: {rows[-1]['accuracy']:.4f}")
    return rows


def clustering(console: Console, settings: MeasureSettings) -> list[dict]:
    rows = []
    for name in ("mnist1d_cnn", "resnet_mnist1d"):
        for label, section in (("16 clusters per layer", {"bits": 4}),
                               ("4 clusters per channel", {"bits": 2, "per_channel": True})):
            recipe = {"clustering": {"enabled": True, "fine_tune_epochs": 5, **section}}
            rows.append(_compressed_row(name, label, recipe, settings))
            console.print(f"clustering / {name} / {label}: {rows[-1]['accuracy']:.4f}")
    return rows


def minilm_svd(console: Console) -> list[dict]:
    from edgecompress.datasets.retrieval import docstring_pairs
    from edgecompress.lowrank import FactorizeConfig, factorize
    from edgecompress.models.minilm import encode, load_minilm, tokenize

    tokenizer, model = load_minilm()
    pairs = docstring_pairs(max_pairs=64)
    ids, mask = tokenize(tokenizer, [p.query for p in pairs] + [p.document for p in pairs])
    reference = encode(model, ids, mask)
    total = count_params(model)
    rows = []
    for ratio in (0.25, 0.5, 0.75):
        result = factorize(model, FactorizeConfig(method="svd", rank_ratio=ratio, ignore=("re:.*attention.*",)))
        cosine = torch.nn.functional.cosine_similarity(encode(result.model, ids, mask), reference)
        rows.append({"rank_ratio": ratio, "params": count_params(result.model),
                     "params_ratio": count_params(result.model) / total, "cosine_mean": float(cosine.mean()),
                     "cosine_min": float(cosine.min()), "layers": len(result.layers)})
        row = rows[-1]
        console.print(f"MiniLM SVD rank {ratio}: params {row['params_ratio']:.3f}, cos {row['cosine_mean']:.4f}")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--parts", nargs="+", default=["kd", "lowrank", "clustering", "minilm"])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "distill_lowrank.json")
    args = parser.parse_args()
    console = Console(width=160)
    settings = MeasureSettings(iters=200, warmup=20, max_seconds=10.0)
    # parts not run this time keep their last results
    results: dict = json.loads(args.out.read_text()) if args.out.exists() else {}
    results["environment"] = environment()
    if "kd" in args.parts:
        results["distillation"] = knowledge_distillation(console)
    if "lowrank" in args.parts:
        results["low_rank"] = low_rank(console, settings)
    if "clustering" in args.parts:
        results["clustering"] = clustering(console, settings)
    if "minilm" in args.parts:
        results["minilm_svd"] = minilm_svd(console)
    write_json_atomic(args.out, results)
    console.print(f"CPU: {cpu_summary()}\nwrote {args.out}")


if __name__ == "__main__":
    main()
