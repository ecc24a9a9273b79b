import pickle
import zipfile

import pytest
import torch
from safetensors.torch import save_file

from edgecompress.errors import ModelLoadError
from edgecompress.model_io import load_model

FACTORY = "edgecompress.testing.tiny_models:TinyMLP"


def test_factory_with_safetensors_weights(tmp_path):
    from edgecompress.testing.tiny_models import TinyMLP

    torch.manual_seed(1)
    source = TinyMLP()
    save_file(source.state_dict(), str(tmp_path / "w.safetensors"))
    loaded = load_model(FACTORY, weights=tmp_path / "w.safetensors")
    x = torch.randn(3, *source.example_inputs()[0].shape[1:])
    torch.testing.assert_close(loaded.model(x), source.eval()(x))
    assert loaded.example_inputs is not None


def test_weights_that_do_not_fit_are_refused(tmp_path):
    save_file({"nope": torch.zeros(2)}, str(tmp_path / "w.safetensors"))
    with pytest.raises(ModelLoadError, match="do not fit"):
        load_model(FACTORY, weights=tmp_path / "w.safetensors")


class _Exploit:
    def __reduce__(self):
        import os

        return (os.system, ("touch EXPLOITED",))


def test_pickle_weights_are_refused_and_never_executed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "evil.pt").write_bytes(pickle.dumps({"w": _Exploit()}))
    torch.save({"w": torch.zeros(1)}, str(tmp_path / "zip.pt"))
    for name in ("evil.pt", "zip.pt"):
        with pytest.raises(ModelLoadError, match="does not unpickle"):
            load_model(FACTORY, weights=tmp_path / name)
    assert not (tmp_path / "EXPLOITED").exists()


@pytest.mark.parametrize("payload", [b"", b"\x01\x00\x00\x00\x00\x00\x00\x00", b"\xff" * 64])
def test_truncated_or_garbage_weights_are_clear_errors(tmp_path, payload):
    (tmp_path / "w.safetensors").write_bytes(payload)
    with pytest.raises(ModelLoadError):
        load_model(FACTORY, weights=tmp_path / "w.safetensors")


def test_bad_specs():
    with pytest.raises(ModelLoadError, match="cannot import"):
        load_model("no_such_module_xyz:make")
    with pytest.raises(ModelLoadError, match="unknown builtin model"):
        load_model("builtin:nope")
    with pytest.raises(ModelLoadError, match="expected"):
        load_model("just-a-name")


def _export_pt2(tmp_path):
    from edgecompress.testing.tiny_models import TinyConv1d

    model = TinyConv1d().eval()
    program = torch.export.export(model, model.example_inputs(batch_size=2),
                                  dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(program, str(tmp_path / "m.pt2"))
    return model, tmp_path / "m.pt2"


def test_pt2_program_loads_with_layers_lifted_to_modules(tmp_path):
    from torch import nn

    model, path = _export_pt2(tmp_path)
    loaded = load_model(str(path))
    x = torch.randn(5, *loaded.example_inputs[0].shape[1:])
    torch.testing.assert_close(loaded.model(x), model(x))
    names = {n for n, m in loaded.model.named_modules() if isinstance(m, nn.Conv1d | nn.Linear)}
    original = {n for n, m in model.named_modules() if isinstance(m, nn.Conv1d | nn.Linear)}
    assert names == original  # pruning and quantization see the same layers, by the same names


def test_pt2_with_pickled_weights_is_refused(tmp_path):
    _, path = _export_pt2(tmp_path)
    tampered = tmp_path / "tampered.pt2"
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(tampered, "w") as dst:
        for info in src.infolist():
            data = src.read(info.filename)
            if info.filename.endswith("_weights_config.json"):
                data = data.replace(b'"use_pickle": false', b'"use_pickle": true', 1)
            dst.writestr(info, data)
    with pytest.raises(ModelLoadError, match="pickled"):
        load_model(str(tampered))


def test_corrupt_pt2_is_a_clear_error(tmp_path):
    (tmp_path / "bad.pt2").write_bytes(b"not a zip at all")
    with pytest.raises(ModelLoadError, match="not a torch.export"):
        load_model(str(tmp_path / "bad.pt2"))
