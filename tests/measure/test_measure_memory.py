import json
import sys

import numpy as np
import pytest
import torch
from torch import nn

from edgecompress.errors import ExportError, UnsupportedError
from edgecompress.measure import peak_rss
from edgecompress.measure.probe import main as probe_main

X = np.random.default_rng(0).standard_normal((1, 16)).astype(np.float32)


def _rss_mb() -> float:
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def _check(result: dict) -> None:
    assert result["peak_rss_mb"] >= result["baseline_rss_mb"] > 0
    assert result["model_rss_mb"] == pytest.approx(result["peak_rss_mb"] - result["baseline_rss_mb"], abs=0.01)


def test_onnxruntime_probe_in_a_fresh_process(tiny_onnx):
    result = peak_rss("onnxruntime", tiny_onnx["external"], X, threads=1, iters=3)
    _check(result)
    assert result["torch_preloaded"] is False  # the probe runs without importing edgecompress or torch
    # Not this process's figure: the probe holds numpy and ONNX Runtime (≈45 MiB here), this one torch too.
    if sys.platform == "linux":
        assert result["peak_rss_mb"] < _rss_mb()


def test_torchscript_probe(tmp_path):
    path = tmp_path / "mlp.pt"
    torch.jit.trace(nn.Sequential(nn.Linear(16, 4)).eval(), torch.from_numpy(X)).save(str(path))
    _check(peak_rss("torchscript", path, X, iters=2))


def test_a_failing_probe_reports_its_stderr(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(ExportError, match="exit code 1") as err:
        peak_rss("onnxruntime", bad, X)
    assert "bad.onnx" in str(err.value)


def test_unknown_runtime_and_missing_artifact(tmp_path):
    with pytest.raises(UnsupportedError, match="tflite"):
        peak_rss("tflite", tmp_path / "m.tflite", X)
    with pytest.raises(ExportError, match="missing.onnx"):
        peak_rss("onnxruntime", tmp_path / "missing.onnx", X)


def test_probe_bad_arguments_are_one_json_error_line(capsys):
    assert probe_main(["--runtime", "tflite", "--artifact", "m", "--input", "x.npy"]) == 1
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and "tflite" in json.loads(out[0])["error"]


def test_the_probe_and_peak_rss_accept_the_same_runtimes():
    from edgecompress.measure import memory, probe

    assert memory.RUNTIMES == probe.RUNTIMES
