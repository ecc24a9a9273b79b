"""S1: the manifest of an output folder finds every changed byte, missing, extra or renamed file, and refuses
entries that point outside the folder."""

import hashlib
import json
import os
from pathlib import Path

import pytest
import torch

from edgecompress import Dataset, EdgeCompressWarning, compress, load_recipe
from edgecompress.errors import IntegrityError
from edgecompress.security import (
    MANIFEST_NAME,
    read_manifest,
    verify_log,
    verify_manifest,
    write_manifest,
)
from edgecompress.security.manifest import canonical_json
from edgecompress.testing.tiny_models import TinyMLP


@pytest.fixture
def folder(tmp_path):
    d = tmp_path / "out"
    (d / "sub").mkdir(parents=True)
    (d / "model.onnx").write_bytes(os.urandom(300))
    (d / "report.json").write_text('{"ok": true}\n')
    (d / "sub" / "weights.bin").write_bytes(bytes(range(256)))
    write_manifest(d)
    return d


def _flip(path, position):
    data = bytearray(path.read_bytes())
    data[position] ^= 0x01
    path.write_bytes(bytes(data))


def test_round_trip_records_hash_and_size_of_every_file(folder):
    manifest = verify_manifest(folder)
    assert sorted(manifest.files) == ["model.onnx", "report.json", "sub/weights.bin"]
    for name, digest in manifest.files.items():
        data = (folder / name).read_bytes()
        assert digest.sha256 == hashlib.sha256(data).hexdigest() and digest.size == len(data)
    raw = (folder / MANIFEST_NAME).read_bytes()
    obj = json.loads(raw)
    assert raw == canonical_json(obj)  # stored canonical: the signed bytes are the parsed ones
    assert obj["schema"] == "edgecompress.manifest/1" and obj["edgecompress_version"] and obj["created"]


def test_every_changed_byte_position_is_found(folder):
    for name in read_manifest(folder).files:
        path = folder / name
        size = path.stat().st_size
        for position in (0, size // 2, size - 1):
            _flip(path, position)
            with pytest.raises(IntegrityError, match=f"changed: {name}"):
                verify_manifest(folder)
            _flip(path, position)  # flipped back: the folder is accepted again
            verify_manifest(folder)


def test_size_changes_missing_extra_and_renamed_files_are_found(folder):
    with open(folder / "report.json", "ab") as f:
        f.write(b" ")
    with pytest.raises(IntegrityError, match="changed: report.json"):
        verify_manifest(folder)
    write_manifest(folder)

    (folder / "sub" / "weights.bin").unlink()
    with pytest.raises(IntegrityError, match="missing: sub/weights.bin"):
        verify_manifest(folder)
    write_manifest(folder)

    (folder / "sub" / "extra.txt").write_text("x")
    with pytest.raises(IntegrityError, match="not in the manifest: sub/extra.txt"):
        verify_manifest(folder)
    (folder / "sub" / "extra.txt").unlink()

    (folder / "model.onnx").rename(folder / "model2.onnx")
    with pytest.raises(IntegrityError, match="missing: model.onnx; not in the manifest: model2.onnx"):
        verify_manifest(folder)


@pytest.mark.parametrize("entry", ["../escape.bin", "/etc/passwd", "sub/../model.onnx", "./model.onnx",
                                   "sub//x", "sub\\weights.bin", "C:/x", "", "manifest.sig"])
def test_entries_outside_the_folder_or_reserved_are_refused(folder, entry):
    obj = json.loads((folder / MANIFEST_NAME).read_bytes())
    obj["files"][entry] = {"sha256": "0" * 64, "size": 0}
    (folder / MANIFEST_NAME).write_bytes(canonical_json(obj))
    with pytest.raises(IntegrityError, match="not allowed|reserved|not a file path"):
        verify_manifest(folder)


@pytest.mark.parametrize("content,match", [
    (b"{not json", "not valid UTF-8 JSON"),
    (b'{"schema": "other/1", "files": {}}', "schema 'other/1'"),
    (b'{"schema": "edgecompress.manifest/1", "files": {"a": {"sha256": "XYZ", "size": 1}}}', "entry 'a'"),
    (b'{"schema": "edgecompress.manifest/1", "files": {"a": {"sha256": "' + b"0" * 64 + b'", "size": -1}}}',
     "non-negative"),
])
def test_a_damaged_manifest_is_refused(folder, content, match):
    (folder / MANIFEST_NAME).write_bytes(content)
    with pytest.raises(IntegrityError, match=match):
        verify_manifest(folder)


def test_missing_manifest_symlinks_and_outside_files_are_refused(folder, tmp_path):
    (folder / MANIFEST_NAME).unlink()
    with pytest.raises(IntegrityError, match="manifest.json is missing"):
        verify_manifest(folder)
    (tmp_path / "secret").write_text("s")
    with pytest.raises(IntegrityError, match="not inside"):
        write_manifest(folder, [tmp_path / "secret"])
    (folder / "link").symlink_to(tmp_path / "secret")
    with pytest.raises(IntegrityError, match="symbolic link"):
        write_manifest(folder)
    with pytest.raises(IntegrityError, match="regular file"):
        write_manifest(folder, ["link"])


def test_a_manifest_of_some_files_reports_the_others_as_extra(folder):
    write_manifest(folder, [folder / "model.onnx", "report.json"])
    with pytest.raises(IntegrityError, match="not in the manifest: sub/weights.bin"):
        verify_manifest(folder)


def test_compress_writes_a_manifest_recipe_and_audit_entry(tmp_path, monkeypatch, fast_measure):
    log = tmp_path / "audit.jsonl"
    monkeypatch.setenv("EDGECOMPRESS_AUDIT_LOG", str(log))
    torch.manual_seed(0)
    x = torch.randn(120, *TinyMLP().example_inputs()[0].shape[1:])
    y = (x.flatten(1).sum(1) > 0).long()
    recipe = {"quantization": {"enabled": True, "calibration_samples": 32}, "output": {"format": "onnx"}}
    monkeypatch.chdir(tmp_path)
    out = Path("out")  # relative, as `--out out` gives it
    out.mkdir()
    (out / "stale.tflite").write_bytes(b"old")  # left by an earlier run: warned about, never listed
    with pytest.warns(EdgeCompressWarning, match="stale.tflite"):
        compress(TinyMLP(), recipe, data=Dataset("synthetic", x[:100], y[:100], x[100:], y[100:]), out_dir=out,
                 measure=fast_measure)
    with pytest.raises(IntegrityError, match="not in the manifest: stale.tflite"):
        verify_manifest(out)
    (out / "stale.tflite").unlink()

    manifest = verify_manifest(out)
    assert sorted(manifest.files) == ["baseline.onnx", "model.onnx", "recipe.json", "report.html", "report.json"]
    assert load_recipe(out / "recipe.json") == load_recipe(recipe)  # the normalised recipe, reusable
    assert verify_log(log).entries == 1
    entry = json.loads(log.read_text())
    assert entry["action"] == "compress" and entry["result"]["status"] == "ok"
    assert entry["recipe_sha256"] == manifest.files["recipe.json"].sha256
    assert entry["outputs"] == {**{n: d.sha256 for n, d in manifest.files.items()}, MANIFEST_NAME: manifest.sha256}
    assert set(entry["inputs"]) == {"model", "data"}
