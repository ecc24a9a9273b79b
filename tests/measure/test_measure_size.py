import shutil

import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from edgecompress.errors import ExportError, RecipeError
from edgecompress.measure import artifact_bytes, artifact_files, ota_bytes, state_dict_bytes


def test_inline_onnx_is_one_file(tiny_onnx):
    path = tiny_onnx["inline"]
    assert artifact_files(path) == [path]
    assert artifact_bytes(path) == path.stat().st_size
    # the weights are in the file: 16·32 + 32 + 32·4 + 4 floats
    assert artifact_bytes(path) > 4 * (16 * 32 + 32 + 32 * 4 + 4)


def test_external_data_is_counted(tiny_onnx):
    path = tiny_onnx["external"]
    files = artifact_files(path)
    assert files == [path, path.with_name("mlp.onnx.data")]
    assert artifact_bytes(path) == sum(f.stat().st_size for f in files)
    assert path.stat().st_size < artifact_bytes(path)  # the .onnx alone misses the weights
    assert artifact_bytes(path) >= 4 * (16 * 32 + 32 * 4)


def test_missing_external_data_names_the_file(tiny_onnx, tmp_path):
    copy = tmp_path / "mlp.onnx"
    shutil.copy(tiny_onnx["external"], copy)
    with pytest.raises(ExportError, match="mlp.onnx.data"):
        artifact_bytes(copy)


def test_unreferenced_sibling_data_file_is_counted(tiny_onnx, tmp_path):
    copy = tmp_path / "mlp.onnx"
    shutil.copy(tiny_onnx["inline"], copy)
    (tmp_path / "mlp.onnx.data").write_bytes(b"x" * 100)
    assert artifact_bytes(copy) == tiny_onnx["inline"].stat().st_size + 100


def test_directory_is_every_file_sorted(tmp_path):
    (tmp_path / "b.bin").write_bytes(b"12345")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.bin").write_bytes(b"123")
    (tmp_path / "a.bin").write_bytes(b"1")
    assert artifact_files(tmp_path) == [tmp_path / "a.bin", tmp_path / "b.bin", tmp_path / "sub" / "a.bin"]
    assert artifact_bytes(tmp_path) == 9


def test_missing_artifact_names_the_path(tmp_path):
    for fn in (artifact_files, artifact_bytes, ota_bytes):
        with pytest.raises(ExportError, match="nope.onnx"):
            fn(tmp_path / "nope.onnx")


def test_damaged_onnx_is_an_export_error(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\xff" * 64)
    with pytest.raises(ExportError, match="bad.onnx"):
        artifact_files(bad)


def _zero_matmul_model(path):
    weight = numpy_helper.from_array(torch.zeros(256, 256).numpy(), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "zeros",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 256])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 256])], [weight])
    onnx.save(helper.make_model(graph), str(path))
    return path


def test_ota_of_random_weights_is_at_most_the_size(tiny_onnx):
    for path in tiny_onnx.values():
        assert ota_bytes(path) <= artifact_bytes(path)
        assert ota_bytes(path) == ota_bytes(path)  # mtime 0: reproducible


def test_ota_of_all_zero_weights_is_far_smaller(tmp_path):
    path = _zero_matmul_model(tmp_path / "zeros.onnx")
    size = artifact_bytes(path)
    assert size > 256 * 256 * 4
    assert ota_bytes(path) < size / 100  # measured ≈ 0.1 % here
    assert ota_bytes(path, level=1) >= ota_bytes(path, level=9)


def test_ota_level_out_of_range(tiny_onnx):
    with pytest.raises(RecipeError, match="0 to 9"):
        ota_bytes(tiny_onnx["inline"], level=10)


def test_state_dict_bytes_is_the_safetensors_size():
    model = nn.Linear(16, 32)
    payload = 4 * (16 * 32 + 32)
    assert payload < state_dict_bytes(model) < payload + 1024  # + a small JSON header


def test_tied_weights_are_stored_once():
    a, b = nn.Linear(64, 64, bias=False), nn.Linear(64, 64, bias=False)
    b.weight = a.weight
    tied = nn.Sequential(a, b)
    assert state_dict_bytes(tied) < state_dict_bytes(nn.Sequential(a, nn.Linear(64, 64, bias=False)))
    assert state_dict_bytes(tied) < 4 * 64 * 64 + 1024


class TwoViews(nn.Module):
    """Two buffers that are views of one storage, one of them non-contiguous."""

    def __init__(self):
        super().__init__()
        base = torch.randn(4, 8)
        self.register_buffer("a", base[:2])
        self.register_buffer("b", base[2:].t())


def test_views_of_one_storage_are_serialised_as_copies():
    assert 4 * 32 < state_dict_bytes(TwoViews()) < 4 * 32 + 1024
