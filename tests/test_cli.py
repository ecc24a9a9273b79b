import json

import numpy as np
import torch
from typer.testing import CliRunner

from edgecompress.cli import app

runner = CliRunner()


def test_bad_recipe_prints_one_error_and_exits_2(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("quantization:\n  enabled: true\n  calibraton_samples: 10\n")
    result = runner.invoke(app, ["compress", "builtin:mnist1d_cnn", "--recipe", str(recipe), "--out",
                                 str(tmp_path / "out")])
    assert result.exit_code == 2
    text = result.output
    assert "calibraton_samples" in text and "calibration_samples" in text  # names the key and the fix
    assert "Traceback" not in text
    assert not (tmp_path / "out").exists()


def test_unknown_model_exits_2(tmp_path):
    result = runner.invoke(app, ["compress", "builtin:nope", "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "unknown builtin model" in result.output


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and "edgecompress" in result.output


def test_compress_a_factory_model_with_npz_data(tmp_path):
    from safetensors.torch import save_file

    from edgecompress.testing.tiny_models import TinyMLP

    torch.manual_seed(0)
    model = TinyMLP()
    save_file(model.state_dict(), str(tmp_path / "w.safetensors"))
    shape = model.example_inputs()[0].shape[1:]
    x = np.random.default_rng(0).normal(size=(120, *shape)).astype(np.float32)
    y = (x.reshape(120, -1).sum(1) > 0).astype(np.int64)
    np.savez(tmp_path / "d.npz", x_train=x[:100], y_train=y[:100], x_test=x[100:], y_test=y[100:])
    recipe = tmp_path / "r.yaml"
    recipe.write_text("quantization: {enabled: true, calibration_samples: 50}\noutput: {format: onnx}\n")
    result = runner.invoke(app, ["compress", "edgecompress.testing.tiny_models:TinyMLP", "--weights",
                                 str(tmp_path / "w.safetensors"), "--data", str(tmp_path / "d.npz"), "--recipe",
                                 str(recipe), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["compressed"]["format"] == "onnx" and (tmp_path / "out" / "model.onnx").is_file()
