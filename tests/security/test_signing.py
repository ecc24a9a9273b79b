"""S1: Ed25519 signatures over the manifest; every tamper case is refused with IntegrityError, the CLI exits 2
with one line and no traceback."""

import base64
import json
import os
import stat

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from typer.testing import CliRunner

from edgecompress.cli import app
from edgecompress.errors import EdgeCompressError, IntegrityError
from edgecompress.security import (
    MANIFEST_NAME,
    SIGNATURE_NAME,
    generate_keypair,
    load_public_key,
    open_verified,
    sign_dir,
    verify_dir,
    verify_file,
    write_manifest,
)
from edgecompress.security.manifest import canonical_json, sha256_file

runner = CliRunner()


@pytest.fixture
def keys(tmp_path):
    return generate_keypair(tmp_path / "keys" / "signer")


@pytest.fixture
def signed(tmp_path, keys):
    d = tmp_path / "out"
    (d / "sub").mkdir(parents=True)
    (d / "model.onnx").write_bytes(os.urandom(200))
    (d / "report.json").write_text('{"accuracy": 0.9}\n')
    (d / "recipe.json").write_text('{"stages": []}\n')
    (d / "sub" / "baseline.onnx").write_bytes(os.urandom(64))
    write_manifest(d)
    sign_dir(d, keys.private_path)
    return d


def test_keygen_writes_a_private_key_only_its_owner_reads_and_never_overwrites(tmp_path, keys):
    assert stat.S_IMODE(keys.private_path.stat().st_mode) == 0o600
    assert keys.private_path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert keys.public_path.read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")
    assert keys.fingerprint.startswith("SHA256:") and len(keys.fingerprint) == 7 + 64
    before = keys.private_path.read_bytes()
    with pytest.raises(EdgeCompressError, match="never overwritten"):
        generate_keypair(keys.private_path)
    assert keys.private_path.read_bytes() == before
    again = generate_keypair(keys.private_path, force=True)
    assert again.fingerprint != keys.fingerprint and stat.S_IMODE(keys.private_path.stat().st_mode) == 0o600


def test_sign_and_verify_round_trip(signed, keys):
    manifest = verify_dir(signed, keys.public_path)
    assert sorted(manifest.files) == ["model.onnx", "recipe.json", "report.json", "sub/baseline.onnx"]
    record = json.loads((signed / SIGNATURE_NAME).read_text())
    assert record["algorithm"] == "ed25519" and record["public_key"] == keys.fingerprint
    assert open_verified(signed / "sub" / "baseline.onnx", keys.public_path) == \
        (signed / "sub" / "baseline.onnx").read_bytes()
    assert verify_file(signed / "model.onnx", keys.public_path) == (signed / "model.onnx").absolute()


def test_sign_writes_a_manifest_when_missing_and_refuses_a_false_one(tmp_path, keys):
    d = tmp_path / "plain"
    d.mkdir()
    (d / "a.bin").write_bytes(b"abc")
    manifest = sign_dir(d, keys.private_path)
    assert list(manifest.files) == ["a.bin"] and (d / MANIFEST_NAME).is_file()
    (d / "a.bin").write_bytes(b"abd")  # the folder no longer matches its manifest: never signed as is
    with pytest.raises(IntegrityError, match="changed: a.bin"):
        sign_dir(d, keys.private_path)


def _rewrite_manifest_to_match(folder):
    # The attacker changes a file and rewrites the manifest so the hashes agree; only the signature stops it.
    obj = json.loads((folder / MANIFEST_NAME).read_bytes())
    path = folder / "model.onnx"
    path.write_bytes(b"evil" + path.read_bytes()[4:])
    obj["files"]["model.onnx"] = {"sha256": sha256_file(path), "size": path.stat().st_size}
    (folder / MANIFEST_NAME).write_bytes(canonical_json(obj))


def _flip_signature(folder):
    record = json.loads((folder / SIGNATURE_NAME).read_bytes())
    sig = bytearray(base64.b64decode(record["signature"]))
    sig[10] ^= 1
    record["signature"] = base64.b64encode(bytes(sig)).decode()
    (folder / SIGNATURE_NAME).write_bytes(canonical_json(record))


def _tamper_cases(folder, other_key):
    """(name, change) pairs: each change must make verify_dir(folder, signer's key) refuse the folder."""
    def flip(name, where):
        def change():
            data = bytearray((folder / name).read_bytes())
            data[where(len(data))] ^= 0x80
            (folder / name).write_bytes(bytes(data))
        return change

    cases = []
    for name in ("model.onnx", "report.json", "recipe.json", "sub/baseline.onnx", MANIFEST_NAME):
        for label, where in (("first", lambda n: 0), ("middle", lambda n: n // 2), ("last", lambda n: n - 1)):
            cases.append((f"flip {label} byte of {name}", flip(name, where)))
        cases.append((f"truncate {name}", lambda n=name: (folder / n).write_bytes((folder / n).read_bytes()[:-1])))
        cases.append((f"append to {name}", lambda n=name: (folder / n).write_bytes((folder / n).read_bytes() + b"\0")))
        cases.append((f"delete {name}", lambda n=name: (folder / n).unlink()))
    cases += [
        ("extra file", lambda: (folder / "extra.bin").write_bytes(b"x")),
        ("extra file in a subfolder", lambda: (folder / "sub" / "extra.bin").write_bytes(b"x")),
        ("rename a file", lambda: (folder / "model.onnx").rename(folder / "model.old")),
        ("swap two files", lambda: _swap(folder / "model.onnx", folder / "sub" / "baseline.onnx")),
        ("file and manifest rewritten together", lambda: _rewrite_manifest_to_match(folder)),
        ("signature flipped", lambda: _flip_signature(folder)),
        ("signature removed", lambda: (folder / SIGNATURE_NAME).unlink()),
        ("re-signed by another key", lambda: sign_dir(folder, other_key.private_path)),
        ("symlink added", lambda: (folder / "link").symlink_to(folder / "model.onnx")),
    ]
    return cases


def _swap(a, b):
    data = a.read_bytes()
    a.write_bytes(b.read_bytes())
    b.write_bytes(data)


def test_every_tamper_case_is_refused(tmp_path, signed, keys):
    other = generate_keypair(tmp_path / "keys" / "other")
    pristine = {p.relative_to(signed): p.read_bytes() for p in signed.rglob("*") if p.is_file()}
    cases = _tamper_cases(signed, other)
    detected = []
    for name, change in cases:
        change()
        try:
            verify_dir(signed, keys.public_path)
        except IntegrityError:
            detected.append(name)
        for p in sorted(signed.rglob("*"), reverse=True):  # restore the signed folder exactly
            if p.is_symlink() or p.is_file():
                p.unlink()
        for rel, data in pristine.items():
            (signed / rel).parent.mkdir(parents=True, exist_ok=True)
            (signed / rel).write_bytes(data)
        verify_dir(signed, keys.public_path)
    assert [n for n, _ in cases if n not in detected] == []  # 39 of 39 cases refused
    assert len(cases) == 39


def test_a_wrong_key_is_named(tmp_path, signed):
    other = generate_keypair(tmp_path / "keys" / "other")
    with pytest.raises(IntegrityError, match=f"not by the given key {other.fingerprint}"):
        verify_dir(signed, other.public_path)
    with pytest.raises(IntegrityError, match="is a private key"):
        verify_dir(signed, other.private_path)


def test_other_key_types_and_garbage_key_files_are_refused(tmp_path, signed):
    ec_key = ec.generate_private_key(ec.SECP256R1())
    pem = ec_key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    (tmp_path / "ec.pub").write_bytes(pem)
    with pytest.raises(IntegrityError, match="expected an Ed25519 public key"):
        load_public_key(tmp_path / "ec.pub")
    (tmp_path / "junk.pub").write_text("not a key")
    with pytest.raises(IntegrityError, match="not a PEM public key"):
        load_public_key(tmp_path / "junk.pub")
    with pytest.raises(IntegrityError, match="not found"):
        load_public_key(tmp_path / "missing.pub")


def test_open_verified_refuses_files_of_a_tampered_or_unsigned_folder(tmp_path, signed, keys):
    (signed / "report.json").write_text("{}")
    with pytest.raises(IntegrityError, match="changed: report.json"):
        open_verified(signed / "model.onnx", keys.public_path)
    lone = tmp_path / "lone" / "model.onnx"
    lone.parent.mkdir()
    lone.write_bytes(b"x")
    with pytest.raises(IntegrityError, match="no manifest.json"):
        open_verified(lone, keys.public_path)


def _one_line_error(result):
    assert result.exit_code == 2, result.output
    text = result.output.strip()  # compress's progress display may leave an empty line before it
    assert text.startswith("error: ") and "\n" not in text, result.output
    assert "Traceback" not in result.output
    return result.output


def test_cli_keygen_sign_verify(tmp_path):
    key = tmp_path / "k"
    result = runner.invoke(app, ["keygen", str(key)])
    assert result.exit_code == 0 and "fingerprint: SHA256:" in result.output, result.output
    assert "PRIVATE" not in result.output  # no key material printed
    assert "never overwritten" in _one_line_error(runner.invoke(app, ["keygen", str(key)]))

    d = tmp_path / "out"
    d.mkdir()
    (d / "model.onnx").write_bytes(b"model")
    result = runner.invoke(app, ["sign", str(d), "--key", str(key)])
    assert result.exit_code == 0 and "signed 1 files" in result.output, result.output
    result = runner.invoke(app, ["verify", str(d), "--pub", f"{key}.pub"])
    assert result.exit_code == 0 and result.output.startswith("OK: 1 files"), result.output
    result = runner.invoke(app, ["verify", str(d), "--no-signature"])
    assert result.exit_code == 0 and "signature not checked" in result.output

    assert "--pub" in _one_line_error(runner.invoke(app, ["verify", str(d)]))
    (d / "model.onnx").write_bytes(b"modeL")
    assert "changed: model.onnx" in _one_line_error(runner.invoke(app, ["verify", str(d), "--pub", f"{key}.pub"]))
    runner.invoke(app, ["keygen", str(tmp_path / "other")])
    (d / "model.onnx").write_bytes(b"model")
    assert "not by the given key" in _one_line_error(
        runner.invoke(app, ["verify", str(d), "--pub", str(tmp_path / "other.pub")]))


def test_cli_compress_pub_loads_weights_only_from_a_verified_folder(tmp_path, keys):
    from safetensors.torch import save_file

    from edgecompress.testing.tiny_models import TinyMLP

    signed_dir = tmp_path / "release"
    signed_dir.mkdir()
    weights = signed_dir / "w.safetensors"
    save_file(TinyMLP().state_dict(), str(weights))
    sign_dir(signed_dir, keys.private_path)
    args = ["compress", "edgecompress.testing.tiny_models:TinyMLP", "--weights", str(weights), "--out",
            str(tmp_path / "out"), "--pub", str(keys.public_path)]
    # Verified and loaded: the run goes on to the next check (this model has no built-in data set).
    assert "--data is required" in _one_line_error(runner.invoke(app, args))
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    assert "changed: w.safetensors" in _one_line_error(runner.invoke(app, args))
    assert "not a file" in _one_line_error(runner.invoke(app, ["compress", "builtin:mnist1d_cnn", "--out",
                                                               str(tmp_path / "o"), "--pub", str(keys.public_path)]))
    assert not (tmp_path / "out").exists() and not (tmp_path / "o").exists()


@pytest.mark.parametrize("field", ["public_key", "manifest_sha256"])
def test_a_changed_byte_outside_the_signature_value_is_refused_too(signed, keys, field):
    """The signature covers the manifest; the signature file's other fields (found by the robustness benchmark's
    random bit flips) and its final newline must not change unnoticed either."""
    path = signed / SIGNATURE_NAME
    record = json.loads(path.read_bytes())
    record[field] = record[field][:-1] + ("0" if record[field][-1] != "0" else "1")
    path.write_bytes(json.dumps(record, sort_keys=True, separators=(",", ":")).encode() + b"\n")
    with pytest.raises(IntegrityError, match="was modified"):
        verify_dir(signed, keys.public_path)
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(IntegrityError):
        verify_dir(signed, keys.public_path)
