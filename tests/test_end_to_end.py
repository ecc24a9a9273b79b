"""End to end on a real trained model: the MNIST-1D CNN (trained once, cached), pruned 50 % with
fine-tuning, INT8, exported to ONNX and measured in ONNX Runtime."""

import pytest
import torch

from edgecompress import compress
from edgecompress.model_io import load_model

RECIPE = {
    "pruning": {"enabled": True, "type": "magnitude", "sparsity": 0.5, "iterative": True, "iterations": 2,
                "fine_tune_epochs": 1},
    "quantization": {"enabled": True, "type": "int8", "calibration_samples": 200, "observer": "minmax"},
    "optimization": {"min_accuracy": 0.88},
    "output": {"format": "onnx"},
}


@pytest.fixture(scope="module")
def trained():
    return load_model("builtin:mnist1d_cnn")


def test_mnist1d_cnn_prune_int8_onnx(trained, tmp_path, fast_measure):
    result = compress(trained.model, RECIPE, data="builtin:mnist1d", example_inputs=trained.example_inputs,
                      out_dir=tmp_path, measure=fast_measure)
    r = result.report
    base, comp = r["baseline"], r["compressed"]
    assert base["accuracy"] >= 0.92  # the reference CNN as trained by edgecompress (paper: 94 %)
    # Accuracy is measured on the ONNX artifact in ONNX Runtime; 50 % sparsity + INT8 costs ≤ 1.5 points.
    assert comp["accuracy"] >= base["accuracy"] - 0.015
    assert comp["sparsity"] == pytest.approx(0.5, abs=0.01)
    assert r["ratios"]["size"] > 1.5 and r["ratios"]["ota_size"] > r["ratios"]["size"]
    parity = r["artifacts"][1]["parity"]
    assert parity["top1_agreement"] >= 0.99  # simulation vs runtime, measured 0.99+
    assert parity["sqnr_db"] > 25
    assert abs(parity["simulation_accuracy"] - parity["runtime_accuracy"]) <= 0.01
    assert r["targets"] == [{"name": "min_accuracy", "limit": 0.88, "value": comp["accuracy"],
                             "met": comp["accuracy"] >= 0.88}]
    assert r["environment"]["cpu"] and "torch" in r["environment"]
    assert base["latency_ms"]["p50"] > 0 and comp["peak_rss_mb"] > 0
    x = torch.zeros(1, 1, 40)
    assert result.model(x).shape == (1, 10)
