import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from edgecompress.datasets import dataset_from_arrays
from edgecompress.errors import EdgeCompressError, IntegrityError
from edgecompress.security.provenance import data_fingerprint, entries_table
from edgecompress.security.registry import ENV_VAR, Registry, RegistryError, default_registry_path


def _artifact(tmp_path: Path, name: str, content: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(content)
    return path


def test_add_stores_the_blob_by_hash_and_a_record_named_by_its_content(tmp_path):
    import hashlib

    registry = Registry(tmp_path / "reg")
    artifact = _artifact(tmp_path, "model.onnx", b"onnx bytes")
    record = registry.add(artifact, {"format": "onnx", "recipe": {"name": "r"}, "metrics": {"accuracy": 0.9}})
    digest = hashlib.sha256(b"onnx bytes").hexdigest()
    assert record.artifact_sha256 == digest
    assert (tmp_path / "reg" / "blobs" / digest).read_bytes() == b"onnx bytes"
    stored = tmp_path / "reg" / "records" / digest / f"{record.id}.json"
    assert json.loads(stored.read_text()) == record.body
    assert record.body["artifact"] == {"sha256": digest, "size_bytes": 10, "file_name": "model.onnx"}
    assert registry.check() == []


def test_the_same_artifact_twice_is_one_entry_with_two_records(tmp_path):
    registry = Registry(tmp_path / "reg")
    artifact = _artifact(tmp_path, "m.onnx", b"same")
    first = registry.add(artifact, {"run": 1})
    second = registry.add(artifact, {"run": 2})
    (entry,) = registry.entries()
    assert [r.id for r in entry.records] == [first.id, second.id]
    assert entry.latest.body["run"] == 2
    assert len(list((tmp_path / "reg" / "blobs").iterdir())) == 1


def test_resolve_by_prefix_of_artifact_or_record_and_ambiguous_prefixes(tmp_path):
    registry = Registry(tmp_path / "reg")
    records = [registry.add(_artifact(tmp_path, f"a{i}", bytes([i]) * 10), {"i": i}) for i in range(40)]
    target = records[7]
    assert registry.resolve(target.artifact_sha256[:12]).artifact_sha256 == target.artifact_sha256
    assert registry.resolve(target.id[:16]).artifact_sha256 == target.artifact_sha256
    assert registry.resolve(target.artifact_sha256.upper()).artifact_sha256 == target.artifact_sha256
    # 40 hashes over 16 first digits: some first digit is shared (pigeonhole)
    firsts = [r.artifact_sha256[0] for r in records]
    shared = next(c for c in firsts if firsts.count(c) > 1)
    with pytest.raises(RegistryError, match="ambiguous"):
        registry.resolve(shared)
    with pytest.raises(RegistryError, match="no registry entry"):
        registry.resolve("0" * 64)
    with pytest.raises(RegistryError, match="hexadecimal"):
        registry.resolve("not-a-hash")


def test_export_writes_atomically_refuses_to_overwrite_and_detects_an_altered_blob(tmp_path):
    registry = Registry(tmp_path / "reg")
    record = registry.add(_artifact(tmp_path, "m.onnx", b"the artifact"), {})
    out = registry.export(record.artifact_sha256[:10], tmp_path / "out" / "m.onnx")
    assert out.read_bytes() == b"the artifact"
    with pytest.raises(RegistryError, match="--force"):
        registry.export(record.artifact_sha256, out)
    out.write_bytes(b"old")
    registry.export(record.artifact_sha256, out, force=True)
    assert out.read_bytes() == b"the artifact"
    with pytest.raises(RegistryError, match="folder"):
        registry.export(record.artifact_sha256, tmp_path)

    blob = tmp_path / "reg" / "blobs" / record.artifact_sha256
    blob.write_bytes(b"the artifacT")  # tampered at rest
    out.write_bytes(b"previous export")
    with pytest.raises(IntegrityError, match="altered"):
        registry.export(record.artifact_sha256, out, force=True)
    assert out.read_bytes() == b"previous export"  # nothing written over it
    assert not any(p.name.endswith(".tmp") for p in out.parent.iterdir())
    assert any("altered" in p for p in registry.check())


def test_check_reports_altered_records_and_missing_blobs(tmp_path):
    registry = Registry(tmp_path / "reg")
    record = registry.add(_artifact(tmp_path, "m", b"x"), {"accuracy": 0.5})
    path = tmp_path / "reg" / "records" / record.artifact_sha256 / f"{record.id}.json"
    path.write_text(path.read_text().replace("0.5", "0.99"))
    assert any("altered" in p for p in registry.check())
    with pytest.raises(IntegrityError, match="altered"):
        registry.records()
    path.write_text("{not json")
    with pytest.raises(RegistryError, match="unreadable"):
        registry.records()
    assert any("unreadable" in p for p in registry.check())
    path.unlink()
    other = registry.add(_artifact(tmp_path, "n", b"y"), {})
    (tmp_path / "reg" / "blobs" / other.artifact_sha256).unlink()
    assert registry.check() == [f"blob {other.artifact_sha256} is missing"]
    with pytest.raises(IntegrityError, match="missing"):
        registry.export(other.artifact_sha256, tmp_path / "o")


def test_registering_a_file_that_changed_since_the_report_is_refused(tmp_path):
    registry = Registry(tmp_path / "reg")
    with pytest.raises(IntegrityError, match="changed"):
        registry.add(_artifact(tmp_path, "m", b"now"), {}, expected_sha256="0" * 64)
    with pytest.raises(RegistryError, match="not a file"):
        registry.add(tmp_path / "missing", {})
    with pytest.raises(RegistryError, match="may not set"):
        registry.add(_artifact(tmp_path, "m2", b"z"), {"artifact": "mine"})


def test_default_location_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "elsewhere"))
    assert default_registry_path() == tmp_path / "elsewhere"
    assert Registry().root == tmp_path / "elsewhere"
    monkeypatch.delenv(ENV_VAR)
    assert default_registry_path().name == "registry" and "edgecompress" in str(default_registry_path())


def test_an_unwritable_registry_is_a_clear_error(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(RegistryError, match="cannot write to the registry"):
        Registry(tmp_path / "file" / "reg").add(_artifact(tmp_path, "m", b"x"), {})


def test_data_fingerprint_covers_name_and_arrays_and_matches_the_audit_log():
    from edgecompress.pipeline.sealing import dataset_sha256

    x = torch.arange(24, dtype=torch.float32).reshape(6, 4)
    y = torch.tensor([0, 1, 0, 1, 0, 1])
    a = dataset_from_arrays("a.npz", x[:4], y[:4], x[4:], y[4:])
    variants = [dataset_from_arrays("a.npz", x[:4], y[:4], x[4:], y[4:]),
                dataset_from_arrays("b.npz", x[:4], y[:4], x[4:], y[4:]),
                dataset_from_arrays("a.npz", x[:4] + 1e-3, y[:4], x[4:], y[4:]),
                dataset_from_arrays("a.npz", x[:4], None, x[4:], None)]
    prints = [data_fingerprint(d) for d in variants]
    assert prints[0] == data_fingerprint(a) and len(set(prints)) == 4
    assert all(data_fingerprint(d) == dataset_sha256(d) for d in variants)  # one data hash across S3 and S4


def test_entries_table_has_one_row_per_artifact(tmp_path):
    from rich.console import Console

    registry = Registry(tmp_path / "reg")
    provenance = {"format": "onnx", "scheme": "int8", "recipe": {"name": "mine"}, "recipe_sha256": "ab" * 32,
                  "metrics": {"compressed": {"accuracy": 0.875}}, "data": {"name": "builtin:mnist1d"}}
    registry.add(_artifact(tmp_path, "m", b"1"), provenance)
    registry.add(_artifact(tmp_path, "m", b"1"), provenance)
    registry.add(_artifact(tmp_path, "n", b"2"), {})
    console = Console(width=200, record=True)
    console.print(entries_table(registry.entries()))
    text = console.export_text()
    assert "87.5 %" in text and "onnx int8" in text and "mine abababab" in text
    assert len([line for line in text.splitlines() if "onnx int8" in line]) == 1


_WRITER = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    from edgecompress.security.registry import Registry

    root, work, tag, n, go = sys.argv[1], Path(sys.argv[2]), sys.argv[3], int(sys.argv[4]), Path(sys.argv[5])
    registry = Registry(root)
    while not go.exists():
        time.sleep(0.01)
    for i in range(n):
        unique = work / f"{tag}-{i}.bin"
        unique.write_bytes(f"{tag} artifact {i}".encode() * 100)
        registry.add(unique, {"writer": tag, "i": i})
        shared = work / f"{tag}-shared-{i % 5}.bin"
        shared.write_bytes(f"shared artifact {i % 5}".encode() * 100)  # both writers store these same blobs
        registry.add(shared, {"writer": tag, "i": i, "shared": True})
""")


def test_two_processes_registering_at_once_lose_nothing(tmp_path):
    root, go, n = tmp_path / "reg", tmp_path / "go", 60
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    writers = []
    for tag in ("A", "B"):
        work = tmp_path / tag
        work.mkdir()
        writers.append(subprocess.Popen([sys.executable, "-c", _WRITER, str(root), str(work), tag, str(n), str(go)],
                                        env=env, stderr=subprocess.PIPE))
    go.touch()
    for writer in writers:
        assert writer.wait(timeout=120) == 0, writer.stderr.read().decode()[-2000:]
    registry = Registry(root)
    records = registry.records()
    assert len(records) == 2 * 2 * n  # every registration of both writers, none lost
    seen = {(r.body["writer"], r.body["i"], r.body.get("shared", False)) for r in records}
    assert len(seen) == 2 * 2 * n
    assert len(registry.entries()) == 2 * n + 5  # the unique artifacts plus the 5 shared ones
    assert registry.check() == []
    leftovers = [p for p in root.rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []


def test_registry_errors_are_edgecompress_errors():
    assert issubclass(RegistryError, EdgeCompressError)


def test_cli_list_show_export(tmp_path):
    from typer.testing import CliRunner

    from edgecompress.cli import app

    runner = CliRunner()
    root = tmp_path / "reg"
    result = runner.invoke(app, ["registry", "list", "--registry", str(root)])
    assert result.exit_code == 0 and "is empty" in result.output
    registry = Registry(root)
    provenance = [{"format": "onnx", "scheme": "int8", "metrics": {"compressed": {"accuracy": 0.5 + i / 100}}}
                  for i in range(20)]
    records = [registry.add(_artifact(tmp_path, f"m{i}.onnx", bytes([i]) * 100), provenance[i]) for i in range(20)]
    result = runner.invoke(app, ["registry", "list", "--registry", str(root)])
    assert result.exit_code == 0, result.output
    assert all(r.artifact_sha256[:12] in result.output for r in records)

    target = records[3]
    result = runner.invoke(app, ["registry", "show", target.artifact_sha256[:10], "--registry", str(root)])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    assert shown["artifact_sha256"] == target.artifact_sha256 and shown["records"][0]["record_id"] == target.id

    firsts = [r.artifact_sha256[0] for r in records]
    shared = next(c for c in firsts if firsts.count(c) > 1)
    result = runner.invoke(app, ["registry", "show", shared, "--registry", str(root)])
    assert result.exit_code == 2 and "ambiguous" in result.output and "Traceback" not in result.output

    out = tmp_path / "exported.onnx"
    result = runner.invoke(app, ["registry", "export", target.artifact_sha256[:10], "--out", str(out),
                                 "--registry", str(root)])
    assert result.exit_code == 0 and out.read_bytes() == bytes([3]) * 100
    result = runner.invoke(app, ["registry", "export", target.artifact_sha256[:10], "--out", str(out),
                                 "--registry", str(root)])
    assert result.exit_code == 2 and "--force" in result.output
    (root / "blobs" / target.artifact_sha256).write_bytes(bytes([4]) * 100)
    result = runner.invoke(app, ["registry", "export", target.artifact_sha256[:10], "--out", str(out), "--force",
                                 "--registry", str(root)])
    assert result.exit_code == 2 and "altered" in result.output
    assert out.read_bytes() == bytes([3]) * 100


def test_compress_registers_its_artifact_with_provenance(tmp_path, monkeypatch, fast_measure):
    from edgecompress import compress
    from edgecompress.pipeline import _sha256_of_state
    from edgecompress.testing.tiny_models import TinyMLP

    monkeypatch.setenv(ENV_VAR, str(tmp_path / "reg"))
    torch.manual_seed(0)
    x, y = torch.randn(80, 20), torch.arange(80) % 4
    data = dataset_from_arrays("mine", x[:60], y[:60], x[60:], y[60:])
    model = TinyMLP()
    recipe = {"quantization": {"enabled": True, "calibration_samples": 20}, "output": {"format": "onnx"}}
    result = compress(model, recipe, data=data, out_dir=tmp_path / "out", measure=fast_measure)
    report = result.report
    registry = Registry(tmp_path / "reg")
    (entry,) = registry.entries()
    body = entry.latest.body
    compressed = report["artifacts"][1]
    assert entry.artifact_sha256 == compressed["sha256"] == report["registry"]["artifact_sha256"]
    assert report["registry"]["record_id"] == entry.latest.id
    assert body["parent"]["model_state_sha256"] == _sha256_of_state(model)  # the model given, left untouched
    assert body["parent"]["baseline_artifact_sha256"] == report["artifacts"][0]["sha256"]
    assert json.loads((tmp_path / "out" / "report.json").read_text())["registry"] == report["registry"]
    assert body["recipe"] == report["recipe"] and len(body["recipe_sha256"]) == 64
    assert body["data"]["fingerprint"] == data_fingerprint(data) and body["data"]["name"] == "mine"
    assert body["metrics"]["compressed"]["size_bytes"] == report["compressed"]["size_bytes"]
    assert body["metrics"]["compressed"]["accuracy"] == report["compressed"]["accuracy"]
    assert body["metrics"]["ratios"] == report["ratios"]
    assert body["environment"] == report["environment"] and body["environment"]["torch"]
    assert body["tool"]["version"] == report["edgecompress_version"]
    assert (tmp_path / "reg" / "blobs" / entry.artifact_sha256).read_bytes() == Path(compressed["path"]).read_bytes()
    assert registry.check() == []
