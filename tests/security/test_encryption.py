"""S2: AES-256-GCM encryption at rest; a wrong key, any flipped bit, a truncated, extended or reordered file is
refused with IntegrityError, and the key is never shown."""

import base64
import os
import pickle
import stat

import pytest
from typer.testing import CliRunner

from edgecompress.cli import app
from edgecompress.errors import EdgeCompressError, IntegrityError
from edgecompress.security import (
    EncryptionKey,
    decrypt_bytes,
    decrypt_file,
    encrypt_bytes,
    encrypt_file,
    load_key,
    write_key,
)

runner = CliRunner()
CHUNK = 64  # small chunks so that a few hundred bytes cover several of them


@pytest.fixture
def key():
    return EncryptionKey(bytes(range(32)), "test")


@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK, 3 * CHUNK + 7])
def test_round_trip_at_chunk_boundaries(key, size):
    data = os.urandom(size)
    blob = encrypt_bytes(data, key=key, name="model.onnx", chunk_size=CHUNK)
    assert decrypt_bytes(blob, key=key) == data
    assert len(data) < 16 or data not in blob  # a byte or two turns up in any random ciphertext
    assert encrypt_bytes(data, key=key, chunk_size=CHUNK) != encrypt_bytes(data, key=key, chunk_size=CHUNK)  # nonce


def test_every_flipped_bit_is_refused(key):
    blob = encrypt_bytes(os.urandom(150), key=key, name="m.onnx", chunk_size=CHUNK)  # header + 3 chunks
    assert len(blob) == 41 + 2 * (CHUNK + 16) + (150 - 2 * CHUNK + 16)  # 239 bytes: 1,912 bits, all refused
    for i in range(len(blob) * 8):
        tampered = bytearray(blob)
        tampered[i // 8] ^= 1 << (i % 8)
        with pytest.raises(IntegrityError):
            decrypt_bytes(bytes(tampered), key=key)


def test_truncated_extended_and_reordered_files_are_refused(key):
    blob = encrypt_bytes(os.urandom(3 * CHUNK), key=key, name="m.onnx", chunk_size=CHUNK)
    for cut in range(len(blob)):  # every truncation, chunk boundaries included
        with pytest.raises(IntegrityError):
            decrypt_bytes(blob[:cut], key=key)
    with pytest.raises(IntegrityError, match="modified, truncated or extended"):
        decrypt_bytes(blob + b"\0", key=key)
    header = len(blob) - 3 * (CHUNK + 16)
    c = [blob[header + i * (CHUNK + 16): header + (i + 1) * (CHUNK + 16)] for i in range(3)]
    with pytest.raises(IntegrityError, match="chunk 0"):
        decrypt_bytes(blob[:header] + c[1] + c[0] + c[2], key=key)
    with pytest.raises(IntegrityError, match="not an edgecompress encrypted file"):
        decrypt_bytes(b"PK\x03\x04 a zip file", key=key)


def test_a_wrong_key_is_named_without_showing_any_key(key):
    other = EncryptionKey(bytes(range(1, 33)), "other")
    blob = encrypt_bytes(b"weights", key=key)
    with pytest.raises(IntegrityError, match="wrong key") as info:
        decrypt_bytes(blob, key=other)
    message = str(info.value)
    for secret in (key._secret, other._secret):
        assert secret.hex() not in message and base64.b64encode(secret).decode() not in message
    assert key.key_id in message and other.key_id in message
    assert bytes(range(32)).hex() not in repr(key) + str(key)
    with pytest.raises(TypeError, match="not pickled"):
        pickle.dumps(key)


def test_keys_from_files_and_the_environment(tmp_path, monkeypatch):
    secret = os.urandom(32)
    forms = {"raw": secret, "hex": secret.hex().encode() + b"\n", "b64": base64.b64encode(secret),
             "b64url": base64.urlsafe_b64encode(secret).rstrip(b"=")}
    for name, content in forms.items():
        (tmp_path / name).write_bytes(content)
        assert load_key(tmp_path / name)._secret == secret
    monkeypatch.setenv("EDGECOMPRESS_KEY", secret.hex())
    assert load_key()._secret == secret and load_key().source == "$EDGECOMPRESS_KEY"
    monkeypatch.setenv("EDGECOMPRESS_KEY", secret.hex()[:40])
    with pytest.raises(IntegrityError, match="not an AES-256 key") as info:
        load_key()
    assert secret.hex()[:40] not in str(info.value)
    monkeypatch.delenv("EDGECOMPRESS_KEY")
    with pytest.raises(EdgeCompressError, match="EDGECOMPRESS_KEY"):
        load_key()
    (tmp_path / "short").write_bytes(b"0123456789abcdef")
    with pytest.raises(IntegrityError, match="got 16 bytes"):
        load_key(tmp_path / "short")


def test_write_key_is_private_and_never_overwritten(tmp_path):
    key = write_key(tmp_path / "aes.key")
    assert stat.S_IMODE((tmp_path / "aes.key").stat().st_mode) == 0o600
    assert load_key(tmp_path / "aes.key").key_id == key.key_id
    with pytest.raises(EdgeCompressError, match="never overwritten"):
        write_key(tmp_path / "aes.key")
    assert load_key(tmp_path / "aes.key").key_id == key.key_id


def test_files_are_written_atomically_and_the_input_is_never_overwritten(tmp_path, key):
    src = tmp_path / "model.onnx"
    data = os.urandom(1000)
    src.write_bytes(data)
    enc = encrypt_file(src, key=key, chunk_size=CHUNK)
    assert enc == tmp_path / "model.onnx.enc" and src.read_bytes() == data
    with pytest.raises(EdgeCompressError, match="input itself"):
        encrypt_file(src, src, key=key)
    with pytest.raises(EdgeCompressError, match="never overwritten"):
        encrypt_file(src, key=key)
    src.unlink()
    assert decrypt_file(enc, key=key) == src and src.read_bytes() == data  # the recorded name, beside it
    assert stat.S_IMODE(src.stat().st_mode) == 0o600

    tampered = bytearray(enc.read_bytes())
    tampered[-1] ^= 1  # the last chunk: earlier chunks were already decrypted when this one fails
    enc.write_bytes(bytes(tampered))
    with pytest.raises(IntegrityError, match="modified"):
        decrypt_file(enc, tmp_path / "out.onnx", key=key)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx", "model.onnx.enc"]  # nothing left behind


def _one_line_error(result):
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: ") and result.output.count("\n") == 1, result.output
    assert "Traceback" not in result.output
    return result.output


def test_cli_encrypt_decrypt(tmp_path):
    key_file = tmp_path / "aes.key"
    result = runner.invoke(app, ["keygen", str(key_file), "--encryption"])
    assert result.exit_code == 0 and "key id" in result.output, result.output
    secret_hex = key_file.read_text().strip()
    src = tmp_path / "model.onnx"
    src.write_bytes(b"model bytes")
    result = runner.invoke(app, ["encrypt", str(src), "--key", str(key_file)])
    assert result.exit_code == 0 and (tmp_path / "model.onnx.enc").is_file(), result.output
    out = tmp_path / "plain.onnx"
    result = runner.invoke(app, ["decrypt", str(tmp_path / "model.onnx.enc"), "--out", str(out)],
                           env={"EDGECOMPRESS_KEY": secret_hex})
    assert result.exit_code == 0 and out.read_bytes() == b"model bytes", result.output
    assert secret_hex not in result.output

    wrong = "11" * 32
    text = _one_line_error(runner.invoke(app, ["decrypt", str(tmp_path / "model.onnx.enc"), "--out",
                                               str(tmp_path / "x")], env={"EDGECOMPRESS_KEY": wrong}))
    assert "wrong key" in text and wrong not in text and secret_hex not in text
    blob = bytearray((tmp_path / "model.onnx.enc").read_bytes())
    blob[-3] ^= 4
    (tmp_path / "model.onnx.enc").write_bytes(bytes(blob))
    assert "fails authentication" in _one_line_error(runner.invoke(
        app, ["decrypt", str(tmp_path / "model.onnx.enc"), "--out", str(tmp_path / "y"), "--key", str(key_file)]))
    no_key = runner.invoke(app, ["encrypt", str(src)], env={"EDGECOMPRESS_KEY": ""})
    assert "EDGECOMPRESS_KEY" in _one_line_error(no_key)
