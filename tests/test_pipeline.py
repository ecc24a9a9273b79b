"""The compress() pipeline on tiny models with synthetic data: order, refusals, warnings, targets."""

import hashlib
import json
import warnings
from pathlib import Path

import pytest
import torch

from edgecompress import Dataset, EdgeCompressWarning, compress
from edgecompress.errors import DataError, RecipeError, UnsupportedError
from edgecompress.testing.tiny_models import TinyConv1d


def _data(labelled=True):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(240, *TinyConv1d().example_inputs()[0].shape[1:], generator=g)
    y = (x.mean(dim=tuple(range(1, x.dim()))) > 0).long()
    return Dataset("synthetic", x[:200], y[:200] if labelled else None, x[200:], y[200:] if labelled else None)


def _model():
    torch.manual_seed(0)
    return TinyConv1d()  # labels 0/1 are valid classes for its output


PRUNE_QUANT = {
    "pruning": {"enabled": True, "sparsity": 0.5, "iterative": True, "iterations": 2, "fine_tune_epochs": 1},
    "quantization": {"enabled": True, "type": "int8", "calibration_samples": 64},
    "optimization": {"max_size_mb": 0.001, "min_accuracy": 0.0},
    "output": {"format": "onnx"},
}


def test_prune_then_quantize_end_to_end_on_a_tiny_model(tmp_path, fast_measure):
    model = _model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = compress(model, PRUNE_QUANT, data=_data(), out_dir=tmp_path, measure=fast_measure)
    r = result.report
    assert [s["name"] for s in r["stages"]] == ["baseline", "prune", "quantize", "export"]
    assert r["compressed"]["sparsity"] == pytest.approx(0.5, abs=0.02)
    assert r["baseline"]["sparsity"] < 0.01
    assert {t["name"]: t["met"] for t in r["targets"]} == {"max_size_mb": False, "min_accuracy": True}
    size_target = next(t for t in r["targets"] if t["name"] == "max_size_mb")
    assert size_target["value"] == pytest.approx(r["compressed"]["size_bytes"] / 1e6)
    assert json.loads((tmp_path / "report.json").read_text())["ratios"] == json.loads(json.dumps(r["ratios"]))
    for a in r["artifacts"]:
        assert hashlib.sha256(Path(a["path"]).read_bytes()).hexdigest() == a["sha256"]
    parity = r["artifacts"][1]["parity"]
    assert parity["top1_agreement"] >= 0.95 and parity["sqnr_db"] > 20  # simulation vs ONNX Runtime
    for k, v in model.state_dict().items():  # the input model is never modified
        torch.testing.assert_close(v, before[k])


def test_unlabelled_data_gives_fidelity_instead_of_accuracy(tmp_path, fast_measure):
    recipe = {"quantization": {"enabled": True, "calibration_samples": 32}}
    with pytest.warns(EdgeCompressWarning, match="no labels"):
        result = compress(_model(), {**recipe, "pruning": {"enabled": True, "sparsity": 0.3}},
                          data=_data(labelled=False), out_dir=tmp_path, measure=fast_measure)
    c = result.report["compressed"]
    assert c["accuracy"] is None and 0.0 <= c["fidelity"]["top1_agreement"] <= 1.0


def test_pruning_without_fine_tuning_is_warned_about(tmp_path, fast_measure):
    recipe = {"pruning": {"enabled": True, "sparsity": 0.3, "fine_tune_epochs": 0}}
    with pytest.warns(EdgeCompressWarning, match="without fine-tuning"):
        compress(_model(), recipe, data=_data(), out_dir=tmp_path, measure=fast_measure)


def test_quantize_before_prune_is_refused_unless_allowed():
    stages = {"stages": [{"quantize": {"type": "int8"}}, {"prune": {"sparsity": 0.5}}]}
    with pytest.raises(RecipeError, match="quantize"):
        compress(_model(), stages, data=_data())


def test_unsupported_requests_fail_before_any_work(tmp_path):
    for recipe in ({"quantization": {"enabled": True, "type": "int4"}, "output": {"format": "tflite"}},
                   {"quantization": {"enabled": True, "type": "int4"}, "output": {"format": "torchscript"}},
                   {"nas": {"enabled": True}},
                   {"quantization": {"enabled": True}, "output": {"format": "torchscript"}}):
        out = tmp_path / str(len(list(tmp_path.iterdir())))
        with pytest.raises(UnsupportedError):
            compress(_model(), recipe, data=_data(), out_dir=out)
        assert not out.exists() or not any(out.iterdir())  # nothing was exported or trained


def test_data_that_does_not_fit_the_model_is_a_clear_error():
    bad = Dataset("bad", torch.randn(20, 3, 3), torch.zeros(20, dtype=torch.long),
                  torch.randn(20, 3, 3), torch.zeros(20, dtype=torch.long), 2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(DataError, match="does not accept the data"):
            compress(_model(), {}, data=bad)
