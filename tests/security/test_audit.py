"""S3: the hash-chained audit log; `audit verify` names the first bad line and what happened to it."""

import json
import multiprocessing

import pytest
import torch
from typer.testing import CliRunner

from edgecompress.cli import app
from edgecompress.errors import EdgeCompressError, IntegrityError, RecipeError
from edgecompress.security import append_entry, audit_log_path, read_entries, verify_log
from edgecompress.security.audit import GENESIS, entry_hash

runner = CliRunner()


def _append(log, n, action="compress"):
    return [append_entry(action, inputs={"model": f"{i:064x}"}, outputs={"model.onnx": f"{i + 1:064x}"},
                         recipe_sha256="ab" * 32, result={"status": "ok"}, path=log) for i in range(n)]


@pytest.fixture
def log(tmp_path):
    path = tmp_path / "audit.jsonl"
    _append(path, 5)
    return path


def _lines(log):
    return log.read_bytes().splitlines(keepends=True)


def _write(log, lines):
    log.write_bytes(b"".join(lines))


def test_entries_form_a_chain(log):
    entries = read_entries(log)
    assert [e["seq"] for e in entries] == [1, 2, 3, 4, 5]
    assert entries[0]["prev_hash"] == GENESIS
    for before, after in zip(entries, entries[1:], strict=False):
        assert after["prev_hash"] == before["hash"] == entry_hash(before)
    e = entries[0]
    assert e["user"] and e["host"] and e["time"].endswith("Z") and e["action"] == "compress"
    summary = verify_log(log)
    assert summary.entries == 5 and summary.head == entries[-1]["hash"]


def test_an_edited_entry_is_found(log):
    lines = _lines(log)
    lines[2] = lines[2].replace(b'"status":"ok"', b'"status":"no"')
    _write(log, lines)
    with pytest.raises(IntegrityError, match="line 3 of .* was edited"):
        verify_log(log)


def test_an_edited_entry_with_its_hash_recomputed_breaks_the_next_link(log):
    lines = _lines(log)
    entry = json.loads(lines[1])
    entry["result"] = {"status": "forged"}
    entry["hash"] = entry_hash(entry)
    lines[1] = json.dumps(entry).encode() + b"\n"
    _write(log, lines)
    with pytest.raises(IntegrityError, match="line 3 .* does not chain .* line 2 was edited"):
        verify_log(log)


@pytest.mark.parametrize("remove,match", [
    (0, "line 1 .* holds entry 2 where entry 1 was expected: entries 1..1 were removed from the start"),
    (2, "line 3 .* holds entry 4 where entry 3 was expected: entry 3 was removed"),
])
def test_a_removed_entry_is_found(log, remove, match):
    lines = _lines(log)
    del lines[remove]
    _write(log, lines)
    with pytest.raises(IntegrityError, match=match):
        verify_log(log)


def test_removed_entries_in_a_row_and_at_the_end(log):
    head = verify_log(log).head
    lines = _lines(log)
    _write(log, lines[:1] + lines[3:])
    with pytest.raises(IntegrityError, match="entries 2..3 were removed"):
        verify_log(log)
    _write(log, lines[:-1])  # a cut at the end keeps a valid chain: only a kept head shows it
    assert verify_log(log).entries == 4
    with pytest.raises(IntegrityError, match="no longer holds the entry"):
        verify_log(log, head=head)


def test_reordered_and_repeated_entries_are_found(log):
    lines = _lines(log)
    _write(log, [lines[0], lines[2], lines[1], *lines[3:]])
    with pytest.raises(IntegrityError, match="line 2 .* reordered"):
        verify_log(log)
    _write(log, [*lines[:3], lines[2], *lines[3:]])
    with pytest.raises(IntegrityError, match="line 4 .* entry 3 is repeated"):
        verify_log(log)


def test_truncated_and_garbled_lines_are_found_and_never_chained_onto(log):
    lines = _lines(log)
    _write(log, [*lines[:4], lines[4][:40]])
    with pytest.raises(IntegrityError, match="line 5 .* incomplete"):
        verify_log(log)
    with pytest.raises(IntegrityError, match="Nothing was appended"):
        _append(log, 1)
    _write(log, [*lines[:2], b"{not json\n", *lines[3:]])
    with pytest.raises(IntegrityError, match="line 3 .* not valid JSON"):
        verify_log(log)
    _write(log, [*lines[:2], b'{"seq": 3}\n', *lines[3:]])
    with pytest.raises(IntegrityError, match="line 3 .* not an audit entry"):
        verify_log(log)


def test_bad_entries_are_refused_before_anything_is_written(tmp_path):
    path = tmp_path / "audit.jsonl"
    with pytest.raises(EdgeCompressError, match="SHA-256 hex strings"):
        append_entry("x", inputs={"model": 3}, outputs={}, result="ok", path=path)
    with pytest.raises(EdgeCompressError, match="finite JSON value"):
        append_entry("x", inputs={}, outputs={}, result=float("nan"), path=path)
    assert not path.exists()


def _append_many(path, n):
    _append(path, n, action="worker")


def test_two_processes_appending_at_once_keep_one_chain(tmp_path):
    path = tmp_path / "audit.jsonl"
    context = multiprocessing.get_context("fork")  # the children only hash and append: no torch work
    workers = [context.Process(target=_append_many, args=(path, 40)) for _ in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    assert [w.exitcode for w in workers] == [0, 0]
    summary = verify_log(path)
    assert summary.entries == 80
    assert [e["seq"] for e in read_entries(path)] == list(range(1, 81))


def test_the_log_location(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGECOMPRESS_AUDIT_LOG", str(tmp_path / "x.jsonl"))
    assert audit_log_path() == tmp_path / "x.jsonl"
    monkeypatch.delenv("EDGECOMPRESS_AUDIT_LOG")
    assert audit_log_path().name == "audit.jsonl" and "edgecompress" in str(audit_log_path())
    with pytest.raises(IntegrityError, match="does not exist"):
        verify_log(tmp_path / "none.jsonl")


def test_cli_audit_verify(log):
    result = runner.invoke(app, ["audit", "verify", "--log", str(log)])
    assert result.exit_code == 0 and "OK: 5 entries" in result.output, result.output
    head = verify_log(log).head
    assert runner.invoke(app, ["audit", "verify", "--head", head], env={"EDGECOMPRESS_AUDIT_LOG": str(log)}
                         ).exit_code == 0
    lines = _lines(log)
    _write(log, [lines[1], lines[0], *lines[2:]])
    result = runner.invoke(app, ["audit", "verify", "--log", str(log)])
    assert result.exit_code == 2 and result.output.startswith("error: line 1 ") and result.output.count("\n") == 1
    assert "Traceback" not in result.output


def test_a_failed_compress_run_is_recorded_and_its_error_re_raised(tmp_path, monkeypatch):
    from edgecompress import compress
    from edgecompress.errors import DataError
    from edgecompress.testing.tiny_models import TinyMLP

    log = tmp_path / "audit.jsonl"
    monkeypatch.setenv("EDGECOMPRESS_AUDIT_LOG", str(log))
    bad = [(torch.full((8, 20), float("nan")), torch.zeros(8, dtype=torch.long))]
    with pytest.raises(DataError):
        compress(TinyMLP(), {"quantization": {"enabled": True}}, data=bad, out_dir=tmp_path / "out")
    with pytest.raises(RecipeError):
        compress(TinyMLP(), {"quantization": {"enabled": True, "no_such_key": 1}}, data=bad)
    assert verify_log(log).entries == 2
    first, second = (json.loads(line) for line in log.read_text().splitlines())
    assert first["result"]["status"] == "failed" and first["result"]["error"].startswith("DataError")
    assert set(first["inputs"]) == {"model"} and first["recipe_sha256"] is not None
    assert "quantization.no_such_key" in second["result"]["error"] and second["recipe_sha256"] is None
