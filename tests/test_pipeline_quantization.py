"""Every quantization scheme of the recipe runs through compress() to a measured artifact whose parity with
the PyTorch simulation is reported."""

import onnx
import pytest
import torch

from edgecompress import Dataset, compress


class WideMLP(torch.nn.Module):
    """Wide enough (25k weights) that weight bytes, not graph structure, decide the file size."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = torch.nn.Linear(64, 256)
        self.relu = torch.nn.ReLU()
        self.fc2 = torch.nn.Linear(256, 32)
        self.fc3 = torch.nn.Linear(32, 4)

    def forward(self, x):
        return self.fc3(self.relu(self.fc2(self.relu(self.fc1(x)))))

    def example_inputs(self, batch_size: int = 1):
        return (torch.randn(batch_size, 64),)


def _data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, 64, generator=g)
    y = (x[:, :4].argmax(dim=1)).long()
    return Dataset("synthetic", x[:240], y[:240], x[240:], y[240:], 4)


def _run(tmp_path, fast_measure, **quantization):
    torch.manual_seed(0)
    recipe = {"quantization": {"enabled": True, "calibration_samples": 64, **quantization},
              "output": {"format": "onnx"}}
    return compress(WideMLP(), recipe, data=_data(), out_dir=tmp_path, measure=fast_measure).report


def _initializer_types(path) -> set[int]:
    return {i.data_type for i in onnx.load(str(path)).graph.initializer}


@pytest.mark.parametrize("keys,stored", [
    (dict(type="int8"), onnx.TensorProto.INT8),
    (dict(type="int8", strategy="dynamic"), onnx.TensorProto.INT8),
    (dict(type="int8", observer="entropy", equalization=True, bias_correction=True, adaround=True,
          adaround_iterations=50), onnx.TensorProto.INT8),
    (dict(type="fp16"), onnx.TensorProto.FLOAT16),
    (dict(type="int4", group_size=16), onnx.TensorProto.INT4),
    (dict(type="mixed", group_size=16, mixed={"size_budget": 0.8, "bits": [4, 8]}), onnx.TensorProto.INT4),
    (dict(type="int4", strategy="quantization_aware", qat={"epochs": 1}), onnx.TensorProto.INT4),
])
def test_each_scheme_ends_in_a_measured_artifact_with_parity(tmp_path, fast_measure, keys, stored):
    report = _run(tmp_path, fast_measure, **keys)
    artifact = report["artifacts"][1]
    assert artifact["scheme"] == ("int8" if keys.get("strategy") == "dynamic" else keys["type"])
    assert stored in _initializer_types(artifact["path"])
    parity = artifact["parity"]
    assert parity["top1_agreement"] >= 0.95
    assert report["compressed"]["size_bytes"] < report["baseline"]["size_bytes"]
    quantize = next(s for s in report["stages"] if s["name"] == "quantize")
    if keys.get("strategy") == "quantization_aware":
        assert quantize["qat"]["epochs"] == 1 and quantize["weight_bits"] == 4
    if keys["type"] == "mixed":
        assert set(quantize["mixed"]["layer_bits"].values()) <= {4, 8}
        bits = {r["layer"]: r["weight_bits"] for r in quantize["layers"] if "layer" in r}
        assert {n: b if b != 7 else 8 for n, b in bits.items()} == quantize["mixed"]["layer_bits"]


@pytest.mark.slow
def test_design_recipe_runs_unchanged_to_a_tflite_artifact(tmp_path, fast_measure):
    """The SPEC's sectioned recipe (prune 10 steps × 5 epochs, INT8, output tflite) on the trained MNIST-1D CNN."""
    from edgecompress.model_io import load_model

    loaded = load_model("builtin:mnist1d_cnn")
    result = compress(loaded.model, "builtin:design", data=loaded.dataset, example_inputs=loaded.example_inputs,
                      out_dir=tmp_path, measure=fast_measure)
    report = result.report
    artifact = report["artifacts"][1]
    assert artifact["format"] == "tflite" and artifact["path"].endswith(".tflite")
    assert report["compressed"]["runtime"] == "litert"
    # measured: 0.947 on the LiteRT artifact (float 0.948), simulation parity top-1 1.000
    assert report["compressed"]["accuracy"] >= 0.92
    assert artifact["parity"]["top1_agreement"] >= 0.99
    assert {t["name"]: t["met"] for t in report["targets"]}["max_size_mb"]
