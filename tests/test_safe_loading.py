"""S5: model files are read without code execution; pickles are refused unless trusted, and even then a pickle
never calls a function; ONNX is checked, never run; NaN/Inf weights are reported; inputs are never touched."""

import hashlib
import io
import json
import pickle
import warnings
import zipfile

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from edgecompress.errors import DataError, ModelLoadError, UnsupportedError
from edgecompress.model_io import load_model
from edgecompress.testing.tiny_models import TinyConv1d, TinyMLP

FACTORY = "edgecompress.testing.tiny_models:TinyMLP"
MARKER = "PWNED"


class _Hostile:
    def __reduce__(self):
        import os

        return (os.system, (f"touch {MARKER}",))


class _HostileModule(torch.nn.Module):
    """A real module whose pickle also carries a call to os.system (in an attribute)."""

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(2, 2)
        self.payload = _Hostile()


def _hostile_files(tmp_path):
    files = {"raw.pkl": pickle.dumps(_Hostile()), "raw.pt": pickle.dumps({"w": _Hostile()})}
    for name, obj in (("zip.pt", {"w": _Hostile()}), ("module.pth", _HostileModule())):
        buf = io.BytesIO()
        torch.save(obj, buf)
        files[name] = buf.getvalue()
    files["disguised.pt2"] = files["zip.pt"]  # named like a .pt2, recognised by its content
    files["disguised.bin"] = files["raw.pkl"]
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    return sorted(files)


def test_hostile_pickles_are_refused_with_an_explanation_and_never_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in _hostile_files(tmp_path):
        with pytest.raises(ModelLoadError, match="pickle-based") as info:
            load_model(str(tmp_path / name))
        assert "--trust-pickle" in str(info.value) and "safetensors" in str(info.value)
        with pytest.raises(ModelLoadError, match="pickle-based"):
            load_model(FACTORY, weights=tmp_path / name)
    assert not (tmp_path / MARKER).exists()


def test_hostile_pickles_never_run_even_with_trust_pickle(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in _hostile_files(tmp_path):
        with pytest.raises(ModelLoadError, match="weights-only unpickler refuses|not an nn.Module class") as info:
            load_model(str(tmp_path / name), trust_pickle=True)
        assert name in str(info.value)
        with pytest.raises(ModelLoadError):
            load_model(FACTORY, weights=tmp_path / name, trust_pickle=True)
    assert not (tmp_path / MARKER).exists()


@pytest.mark.parametrize("cls", [TinyMLP, TinyConv1d])
def test_a_trusted_whole_model_pickle_loads(tmp_path, cls):
    torch.manual_seed(0)
    model = cls().eval()
    torch.save(model, str(tmp_path / "model.pt"))
    loaded = load_model(str(tmp_path / "model.pt"), trust_pickle=True)
    assert type(loaded.model) is cls and not loaded.model.training
    x = model.example_inputs(batch_size=3)[0]
    torch.testing.assert_close(loaded.model(x), model(x), rtol=0, atol=0)
    assert loaded.example_inputs is not None


def test_a_trusted_state_dict_pickle_goes_with_a_factory(tmp_path):
    torch.manual_seed(0)
    model = TinyMLP().eval()
    torch.save(model.state_dict(), str(tmp_path / "w.pt"))
    with pytest.raises(ModelLoadError, match="--weights"):
        load_model(str(tmp_path / "w.pt"), trust_pickle=True)  # a state dict has no architecture
    loaded = load_model(FACTORY, weights=tmp_path / "w.pt", trust_pickle=True)
    x = model.example_inputs(batch_size=3)[0]
    torch.testing.assert_close(loaded.model(x), model(x), rtol=0, atol=0)


def test_other_formats_get_a_clear_answer(tmp_path, monkeypatch):
    model = TinyMLP().eval()
    save_file(model.state_dict(), str(tmp_path / "w.safetensors"))
    with pytest.raises(ModelLoadError, match="package.module:factory"):
        load_model(str(tmp_path / "w.safetensors"))
    torch.jit.save(torch.jit.script(model), str(tmp_path / "ts.pt"))
    with pytest.raises(UnsupportedError, match="TorchScript"):
        load_model(str(tmp_path / "ts.pt"), trust_pickle=True)
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ModelLoadError, match="not a model file"):
        load_model(str(tmp_path / "notes.txt"))
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model(str(tmp_path / "missing.pt"))
    with pytest.raises(ModelLoadError, match="non-empty string"):
        load_model("")


def test_onnx_is_checked_with_onnx_never_run_and_refused_with_what_to_give(tmp_path, monkeypatch):
    import onnxruntime

    def _no_session(*args, **kwargs):
        raise AssertionError("an ONNX model given as input must never be run")

    monkeypatch.setattr(onnxruntime, "InferenceSession", _no_session)
    model = TinyMLP().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter: quick, and enough here
        torch.onnx.export(model, model.example_inputs(), str(tmp_path / "m.onnx"), dynamo=False)
    with pytest.raises(UnsupportedError, match=r"ONNX model \(opsets.*\.pt2"):
        load_model(str(tmp_path / "m.onnx"))
    data = (tmp_path / "m.onnx").read_bytes()
    (tmp_path / "cut.onnx").write_bytes(data[: len(data) // 2])
    (tmp_path / "empty.onnx").write_bytes(b"")
    for name in ("cut.onnx", "empty.onnx"):
        with pytest.raises(ModelLoadError, match=f"{name} is not a valid ONNX model"):
            load_model(str(tmp_path / name))


def test_truncated_files_name_the_file(tmp_path):
    model = TinyConv1d().eval()
    program = torch.export.export(model, model.example_inputs(batch_size=2),
                                  dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(program, str(tmp_path / "m.pt2"))
    save_file(TinyMLP().state_dict(), str(tmp_path / "w.safetensors"))
    for name in ("m.pt2", "w.safetensors"):
        data = (tmp_path / name).read_bytes()
        cut = tmp_path / f"cut-{name}"
        cut.write_bytes(data[: int(len(data) * 0.7)])
        with pytest.raises(ModelLoadError, match=f"cut-{name}"):
            if name.endswith(".pt2"):
                load_model(str(cut))
            else:
                load_model(FACTORY, weights=cut)


def test_weights_of_the_wrong_shape_are_a_model_load_error(tmp_path):
    state = TinyMLP().state_dict()
    first = next(iter(state))
    state[first] = torch.zeros(3, 3)
    save_file(state, str(tmp_path / "w.safetensors"))
    with pytest.raises(ModelLoadError, match=f"do not fit.*{first}"):
        load_model(FACTORY, weights=tmp_path / "w.safetensors")


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_weights_are_reported_as_data_errors(tmp_path, bad):
    state = TinyMLP().state_dict()
    name = next(k for k in state if k.endswith("weight"))
    state[name] = state[name].clone()
    state[name].view(-1)[:3] = bad
    save_file(state, str(tmp_path / "w.safetensors"))
    with pytest.raises(DataError, match=rf"NaN or Inf in {name} \(3 values\)"):
        load_model(FACTORY, weights=tmp_path / "w.safetensors")

    model = TinyConv1d().eval()
    with torch.no_grad():
        model.fc.bias[0] = bad
    program = torch.export.export(model, model.example_inputs(batch_size=2),
                                  dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(program, str(tmp_path / "m.pt2"))
    with pytest.raises(DataError, match="NaN or Inf in fc.bias"):
        load_model(str(tmp_path / "m.pt2"))


def test_compress_reports_non_finite_weights_and_data(tmp_path, monkeypatch):
    from edgecompress import compress

    monkeypatch.setenv("EDGECOMPRESS_REGISTRY", str(tmp_path / "registry"))
    x = torch.randn(60, 20)
    y = torch.arange(60) % 4
    model = TinyMLP()
    with torch.no_grad():
        model.fc2.weight[0, 0] = float("nan")
    with pytest.raises(DataError, match="'fc2.weight' contains NaN or Inf"):
        compress(model, {"quantization": {"enabled": True}}, data=[(x, y)], out_dir=tmp_path / "o1")
    x[3, 4] = float("inf")
    with pytest.raises(DataError, match="1 NaN or Inf"):
        compress(TinyMLP(), {"quantization": {"enabled": True}}, data=[(x, y)], out_dir=tmp_path / "o2")
    assert not (tmp_path / "registry").exists()  # nothing registered for a refused run


runner = CliRunner()


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_cli_refuses_an_output_folder_that_holds_the_input(tmp_path):
    from edgecompress.cli import app

    model = TinyConv1d().eval()
    program = torch.export.export(model, model.example_inputs(batch_size=2),
                                  dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(program, str(tmp_path / "model.pt2"))
    before = (_sha(tmp_path / "model.pt2"), (tmp_path / "model.pt2").stat().st_mtime_ns)
    result = runner.invoke(app, ["compress", str(tmp_path / "model.pt2"), "--data", "builtin:mnist1d", "--out",
                                 str(tmp_path)])
    assert result.exit_code == 2 and "holds the input model.pt2" in result.output
    assert (_sha(tmp_path / "model.pt2"), (tmp_path / "model.pt2").stat().st_mtime_ns) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt2"]


def test_cli_pickle_refusal_and_trust_pickle_flag(tmp_path, monkeypatch):
    from edgecompress.cli import app

    monkeypatch.setenv("EDGECOMPRESS_REGISTRY", str(tmp_path / "registry"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "evil.pt").write_bytes(pickle.dumps(_Hostile()))
    result = runner.invoke(app, ["compress", "evil.pt", "--data", "builtin:mnist1d", "--out", "o1"])
    assert result.exit_code == 2 and "--trust-pickle" in result.output and "Traceback" not in result.output
    result = runner.invoke(app, ["compress", "evil.pt", "--trust-pickle", "--data", "builtin:mnist1d", "--out", "o2"])
    assert result.exit_code == 2 and "refers to posix.system" in result.output
    assert not (tmp_path / MARKER).exists()

    torch.manual_seed(0)
    model = TinyMLP().eval()
    torch.save(model, str(tmp_path / "model.pt"))
    shape = model.example_inputs()[0].shape[1:]
    x = np.random.default_rng(0).normal(size=(60, *shape)).astype(np.float32)
    y = (x.reshape(60, -1).sum(1) > 0).astype(np.int64)
    np.savez(tmp_path / "d.npz", x_train=x[:40], y_train=y[:40], x_test=x[40:], y_test=y[40:])
    (tmp_path / "r.yaml").write_text("quantization: {enabled: true, calibration_samples: 20}\noutput: {format: onnx}\n")
    before = _sha(tmp_path / "model.pt")
    result = runner.invoke(app, ["compress", "model.pt", "--trust-pickle", "--data", "d.npz", "--recipe", "r.yaml",
                                 "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert _sha(tmp_path / "model.pt") == before  # the input is never written
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["registry"]["artifact_sha256"] == report["artifacts"][1]["sha256"]


def test_a_pt2_whose_archive_lies_about_pickles_is_still_refused(tmp_path):
    model = TinyConv1d().eval()
    program = torch.export.export(model, model.example_inputs(batch_size=2),
                                  dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(program, str(tmp_path / "m.pt2"))
    tampered = tmp_path / "t.pt2"
    with zipfile.ZipFile(tmp_path / "m.pt2") as src, zipfile.ZipFile(tampered, "w") as dst:
        for info in src.infolist():
            data = src.read(info.filename)
            if info.filename.endswith("_constants_config.json") or info.filename.endswith("_weights_config.json"):
                data = data.replace(b'"path_name": "', b'"path_name": "custom_obj_', 1)
            dst.writestr(info, data)
    with pytest.raises(ModelLoadError, match="pickled"):
        load_model(str(tampered), trust_pickle=True)


def test_a_pt2_that_would_fall_back_to_the_legacy_unpickling_loader_is_refused(tmp_path, monkeypatch):
    """torch.export.load, when the current format fails with a RuntimeError, retries the 2.7 format, whose
    top-level serialized_state_dict.pt it unpickles with weights_only=False if the safe load fails: this archive
    (a short weight to make the current loader fail, plus the legacy members) ran its payload before the member
    whitelist."""
    from torch._export.serde.schema import SCHEMA_VERSION

    monkeypatch.chdir(tmp_path)
    model = TinyConv1d().eval()
    program = torch.export.export(model, model.example_inputs(batch_size=2),
                                  dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(program, str(tmp_path / "m.pt2"))
    with zipfile.ZipFile(tmp_path / "m.pt2") as src:
        members = [(info, src.read(info.filename)) for info in src.infolist()]
    model_json = next(data for info, data in members if info.filename.endswith("models/model.json"))
    with zipfile.ZipFile(tmp_path / "evil.pt2", "w") as dst:
        for info, data in members:
            dst.writestr(info, data[:4] if info.filename.endswith("weights/weight_0") else data)
        dst.writestr("version", ".".join(map(str, SCHEMA_VERSION)))
        dst.writestr("serialized_exported_program.json", model_json)
        dst.writestr("serialized_state_dict.pt", pickle.dumps(_Hostile()))
        for name in ("serialized_constants.pt", "serialized_example_inputs.pt"):
            dst.writestr(name, b"")
    with pytest.raises(ModelLoadError, match="'version', which a torch.export.save archive does not"):
        load_model(str(tmp_path / "evil.pt2"), trust_pickle=True)
    assert not (tmp_path / MARKER).exists()
