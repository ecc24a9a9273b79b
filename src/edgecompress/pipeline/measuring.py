"""Measure an exported artifact in its own runtime: quality on the test split, latency percentiles,
peak RAM in a fresh process, size on disk, and parity with the PyTorch model it came from."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..export import Artifact, Exporter
from ..measure import (
    ModelMetrics,
    accuracy,
    artifact_bytes,
    count_macs,
    count_params,
    fidelity,
    measure_latency,
    ota_bytes,
    peak_rss,
    sparsity,
    torch_latency,
)
from ..progress import tracked
from ..training import predict
from .stages import RunContext


@dataclass(frozen=True)
class MeasureSettings:
    """How hard to measure. The defaults give stable percentiles on a small model in a few seconds."""

    warmup: int = 10
    iters: int = 100
    batch_size: int = 32  # the "batch N" of the batch latency
    max_seconds: float = 5.0
    eval_batch_size: int = 256
    peak_rss: bool = True


def run_artifact(runner, x: torch.Tensor, batch_size: int, progress=None, description="evaluate") -> np.ndarray:
    chunks = list(x.split(batch_size))
    return np.concatenate([runner(c.numpy()) for c in tracked(chunks, progress, description)])


def measure_artifact(exporter: Exporter, artifact: Artifact, *, exported_model: nn.Module, float_model: nn.Module,
                     reference_logits: torch.Tensor, ctx: RunContext, settings: MeasureSettings,
                     label: str) -> tuple[ModelMetrics, dict]:
    """Figures for one artifact, and its parity with ``exported_model`` (the PyTorch model it was made
    from). Params, MACs and sparsity come from ``float_model``, the float equivalent before quantization."""
    dataset = ctx.dataset
    run_all = exporter.runner(artifact.path)
    run_one = exporter.runner(artifact.path, threads=1)
    logits = run_artifact(run_all, dataset.x_test, settings.eval_batch_size, ctx.progress, f"{label}: evaluate")
    simulated = predict(exported_model, dataset.x_test).numpy()
    parity = fidelity(simulated, logits)
    quality_vs_original = fidelity(reference_logits.numpy(), logits)
    acc = accuracy(logits, dataset.y_test.numpy()) if dataset.y_test is not None else None
    sim_acc = accuracy(simulated, dataset.y_test.numpy()) if dataset.y_test is not None else None
    parity["simulation_accuracy"] = sim_acc
    parity["runtime_accuracy"] = acc

    x1 = dataset.x_test[:1].numpy()
    xn = dataset.x_test[: settings.batch_size].numpy()
    timing = dict(warmup=settings.warmup, iters=settings.iters, max_seconds=settings.max_seconds)
    detail = {}
    cases = [("b1_t1", run_one, x1), ("b1_tall", run_all, x1), ("bN_t1", run_one, xn), ("bN_tall", run_all, xn)]
    for key, run, x in tracked(cases, ctx.progress, f"{label}: latency"):
        detail[key] = measure_latency(lambda run=run, x=x: run(x), **timing)
    detail["batch_size_N"] = int(xn.shape[0])
    torch_lat = torch_latency(exported_model, (dataset.x_test[:1],), threads=1, **timing)
    rss = (peak_rss(exporter.runtime, artifact.path, x1, threads=1)["peak_rss_mb"]
           if settings.peak_rss else None)
    metrics = ModelMetrics(
        size_bytes=artifact_bytes(artifact.path), ota_bytes=ota_bytes(artifact.path),
        params=count_params(float_model), macs=count_macs(float_model, ctx.example_inputs),
        sparsity=sparsity(float_model), accuracy=acc, fidelity=quality_vs_original,
        latency_ms={"p50": detail["b1_t1"]["p50"], "p90": detail["b1_t1"]["p90"]},
        torch_latency_ms={"p50": torch_lat["p50"], "p90": torch_lat["p90"]},
        runtime=exporter.runtime, peak_rss_mb=rss, format=artifact.format, path=str(artifact.path),
        latency_detail=detail)
    return metrics, parity
