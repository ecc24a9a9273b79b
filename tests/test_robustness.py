"""Property-based robustness: random, truncated and corrupted recipes, data files and model files either load or
fail with an EdgeCompressError that has a message, never with a traceback from deep inside a library; outputs
are atomic even when the writer is killed."""

import functools
import io
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import warnings
import zipfile
from importlib.resources import files
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from safetensors.torch import save_file

from edgecompress.datasets import dataset_from_arrays, load_dataset
from edgecompress.errors import EdgeCompressError
from edgecompress.model_io import load_model
from edgecompress.recipe import PARAMS_BY_KIND, builtin_recipe_names, load_recipe, parse_recipe_yaml
from edgecompress.recipe.normalize import TOP_LEVEL_KEYS
from edgecompress.recipe.schema import OptimizationSection, OutputSection, TrainingSection

FACTORY = "edgecompress.testing.tiny_models:TinyMLP"
# Fixed examples by default (a repeatable suite); EDGECOMPRESS_FUZZ=N runs N times as many, freshly random.
_FUZZ = int(os.environ.get("EDGECOMPRESS_FUZZ", "0"))


def fuzz(max_examples: int):
    return settings(max_examples=max_examples * max(1, _FUZZ), deadline=None, database=None, derandomize=not _FUZZ,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.function_scoped_fixture])


def clean(fn, *args, names: str | None = None, **kwargs):
    """Call ``fn``: its result, or the EdgeCompressError it raised, which must carry a message (naming the file
    ``names``, when given). Any other exception escapes and fails the test (hypothesis then shrinks the input)."""
    try:
        return fn(*args, **kwargs)
    except EdgeCompressError as e:
        assert str(e).strip(), f"{type(e).__name__} without a message"
        assert names is None or names in str(e), f"the message does not name {names}: {e}"
        return e


# ---- recipes --------------------------------------------------------------------------------------------------------

_PARAM_KEYS = sorted({k for model in PARAMS_BY_KIND.values() for k in model.model_fields}
                     | {k for m in (OptimizationSection, OutputSection, TrainingSection) for k in m.model_fields}
                     | {"enabled", "kind"})
_KEYS = st.sampled_from(_PARAM_KEYS) | st.text(max_size=8)
_SCALARS = (st.none() | st.booleans() | st.integers(min_value=-10**30, max_value=10**30)
            | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=12)
            | st.sampled_from(["int8", "int4", "fp16", "onnx", "tflite", "magnitude", "structured", "minmax",
                               "re:.*", "1e-3", "auto", "kd", "svd", "all", "stm32", ""]))
_VALUES = st.recursive(_SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_KEYS, inner, max_size=4),
                       max_leaves=12)
_SECTION = st.dictionaries(_KEYS, _VALUES, max_size=6)
_RECIPES = st.dictionaries(st.sampled_from(TOP_LEVEL_KEYS) | st.text(max_size=8),
                           _SECTION | st.lists(_SECTION | _VALUES, max_size=3) | _VALUES, max_size=5)


@fuzz(300)
@given(_RECIPES)
def test_random_recipe_mappings(recipe):
    clean(load_recipe, recipe)


@fuzz(150)
@given(_RECIPES)
def test_random_recipes_through_yaml(recipe):
    try:
        text = yaml.safe_dump(recipe, allow_unicode=True)
    except yaml.YAMLError:
        return
    clean(parse_recipe_yaml, text)


@fuzz(200)
@given(st.text(max_size=300))
def test_random_recipe_text(text):
    clean(parse_recipe_yaml, text)


@functools.cache
def _workdir() -> Path:
    """One folder for the generated files (module-level, not a fixture, so that hypothesis does not print it)."""
    return Path(tempfile.mkdtemp(prefix="edgecompress-robustness-"))


@pytest.fixture(scope="module", autouse=True)
def _remove_workdir():
    yield
    if _workdir.cache_info().currsize:
        shutil.rmtree(_workdir(), ignore_errors=True)


_BUILTIN_RECIPES = [(files("edgecompress") / "recipes" / f"{name}.yaml").read_bytes()
                    for name in builtin_recipe_names()]


@fuzz(150)
@given(st.sampled_from(_BUILTIN_RECIPES), st.data())
def test_truncated_and_corrupted_recipe_files(original, data):
    path = _workdir() / "recipe.yaml"
    path.write_bytes(_damage(original, data))
    clean(load_recipe, path, names=path.name)


def test_an_alias_bomb_is_refused_quickly():
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)]
    with pytest.raises(EdgeCompressError):
        parse_recipe_yaml("\n".join(lines) + "\n")


# ---- damage: truncation, byte flips, random bytes -------------------------------------------------------------------

def _damage(original: bytes, data) -> bytes:
    how = data.draw(st.sampled_from(["truncate", "flip", "random", "splice"]))
    if how == "truncate":
        return original[: data.draw(st.integers(0, max(0, len(original) - 1)))]
    if how == "flip":
        out = bytearray(original)
        for _ in range(data.draw(st.integers(1, 8))):
            i = data.draw(st.integers(0, len(out) - 1))
            out[i] = data.draw(st.integers(0, 255))
        return bytes(out)
    if how == "splice":
        i = data.draw(st.integers(0, len(original)))
        return original[:i] + data.draw(st.binary(max_size=64)) + original[i:]
    return data.draw(st.binary(max_size=512))


# ---- data -----------------------------------------------------------------------------------------------------------

@functools.cache
def _npz_bytes() -> bytes:
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    np.savez(buf, x_train=rng.normal(size=(12, 4)).astype(np.float32), y_train=rng.integers(0, 3, 12),
             x_test=rng.normal(size=(6, 4)).astype(np.float32), y_test=rng.integers(0, 3, 6))
    return buf.getvalue()


@fuzz(250)
@given(st.data())
def test_truncated_and_corrupted_npz(data):
    path = _workdir() / "data.npz"
    path.write_bytes(_damage(_npz_bytes(), data))
    clean(load_dataset, str(path), names=path.name)


def test_an_npz_whose_members_claim_encryption_is_a_data_error():
    """Found by benchmarks/robustness.py: zipfile raises RuntimeError for a member flagged as encrypted."""
    data = bytearray(_npz_bytes())
    at = data.find(b"PK\x01\x02")
    while at >= 0:  # the "encrypted" bit of every central directory entry's flags
        data[at + 8] |= 1
        at = data.find(b"PK\x01\x02", at + 4)
    path = _workdir() / "encrypted.npz"
    path.write_bytes(bytes(data))
    with pytest.raises(EdgeCompressError, match="encrypted.npz.*encrypted, password required"):
        load_dataset(str(path))


_DTYPES = (hnp.integer_dtypes() | hnp.unsigned_integer_dtypes() | hnp.floating_dtypes() | hnp.boolean_dtypes()
           | hnp.complex_number_dtypes() | hnp.datetime64_dtypes() | hnp.byte_string_dtypes(max_len=3))
_ARRAYS = hnp.arrays(_DTYPES, hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4))


@fuzz(250)
@given(_ARRAYS, _ARRAYS | st.none(), _ARRAYS, _ARRAYS | st.none())
def test_random_arrays_as_data(x_train, y_train, x_test, y_test):
    clean(dataset_from_arrays, "random", x_train, y_train, x_test, y_test)


_SPEC_TEXT = st.text(max_size=40).filter(lambda s: not re.fullmatch(r"\s*[\w.]+\s*:\s*\w+\s*", s))


@fuzz(150)
@given(_SPEC_TEXT)
def test_random_data_and_model_specs(spec):
    # module:function specs import and call user code by design; random text that looks like one is skipped
    clean(load_dataset, spec)
    clean(load_model, spec)


# ---- model files ----------------------------------------------------------------------------------------------------

@functools.cache
def _model_files() -> dict[str, bytes]:
    """A valid file of each kind: safetensors weights, a .pt2 program, an ONNX model, a torch.save pickle."""
    from edgecompress.testing.tiny_models import TinyConv1d, TinyMLP

    torch.manual_seed(0)
    folder = _workdir()
    save_file(TinyMLP().state_dict(), str(folder / "base.safetensors"))
    model = TinyConv1d().eval()
    program = torch.export.export(model, model.example_inputs(batch_size=2),
                                  dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(program, str(folder / "base.pt2"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter: quick, and enough here
        torch.onnx.export(TinyMLP().eval(), (torch.randn(1, 20),), str(folder / "base.onnx"), dynamo=False)
    torch.save(TinyMLP().eval(), str(folder / "base.pt"))
    return {suffix: (folder / f"base.{suffix}").read_bytes() for suffix in ("safetensors", "pt2", "onnx", "pt")}


@fuzz(120)
@given(st.data())
def test_truncated_and_corrupted_safetensors(data):
    path = _workdir() / "w.safetensors"
    path.write_bytes(_damage(_model_files()["safetensors"], data))
    clean(load_model, FACTORY, weights=path, names=path.name)


_HEADER_ENTRY = st.fixed_dictionaries({
    "dtype": st.sampled_from(["F32", "F16", "BF16", "I64", "U8", "BOOL", "F64", "XX", ""]) | st.integers(),
    "shape": st.lists(st.integers(-3, 40) | st.integers(2**31, 2**63), max_size=3) | st.text(max_size=3),
    "data_offsets": st.lists(st.integers(-5, 5000) | st.integers(2**40, 2**64), min_size=0, max_size=3),
})


@fuzz(150)
@given(st.dictionaries(st.sampled_from(["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias", "__metadata__", "x"]),
                       _HEADER_ENTRY, max_size=4), st.binary(max_size=4096))
def test_forged_safetensors_headers(header, payload):
    import json

    text = json.dumps(header).encode()
    path = _workdir() / "forged.safetensors"
    path.write_bytes(len(text).to_bytes(8, "little") + text + payload)
    clean(load_model, FACTORY, weights=path, names=path.name)


@fuzz(40)
@given(st.data())
def test_truncated_and_corrupted_pt2(data):
    path = _workdir() / "m.pt2"
    path.write_bytes(_damage(_model_files()["pt2"], data))
    clean(load_model, str(path), names=path.name)


@fuzz(40)
@given(st.data())
def test_pt2_with_corrupted_members(data):
    """Damage inside a member of a well-formed zip (CRCs recomputed), which reaches torch.export's own parser."""
    with zipfile.ZipFile(io.BytesIO(_model_files()["pt2"])) as source:
        members = [(info, source.read(info.filename)) for info in source.infolist()]
    target = data.draw(st.sampled_from([info.filename for info, _ in members]))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as dst:
        for info, payload in members:
            dst.writestr(info, _damage(payload, data) if info.filename == target else payload)
    path = _workdir() / "member.pt2"
    path.write_bytes(out.getvalue())
    clean(load_model, str(path), names=path.name)


@fuzz(80)
@given(st.data())
def test_truncated_and_corrupted_onnx(data):
    path = _workdir() / "m.onnx"
    path.write_bytes(_damage(_model_files()["onnx"], data))
    result = clean(load_model, str(path), names=path.name)
    assert isinstance(result, EdgeCompressError)  # an ONNX input is never loaded as a model


@fuzz(60)
@given(st.data(), st.booleans())
def test_truncated_and_corrupted_pickles(data, trust):
    path = _workdir() / "m.pt"
    path.write_bytes(_damage(_model_files()["pt"], data))
    result = clean(load_model, str(path), trust_pickle=trust, names=path.name)
    if not trust:
        assert isinstance(result, EdgeCompressError)


# ---- atomic outputs -------------------------------------------------------------------------------------------------

_SLOW_WRITER = textwrap.dedent("""
    import sys, time
    from edgecompress.fileio import atomic_path

    final = sys.argv[1]
    with atomic_path(final) as tmp:
        with open(tmp, "wb") as f:
            for i in range(10_000):
                f.write(b"new" * 100_000)
                f.flush()
                if i == 3:
                    print("writing", flush=True)  # the parent kills us from here on
                time.sleep(0.01)
""")


@pytest.mark.parametrize("existing", [False, True])
def test_a_writer_killed_mid_write_leaves_no_partial_file(tmp_path, existing):
    final = tmp_path / "model.onnx"
    if existing:
        final.write_bytes(b"the previous, complete file")
    child = subprocess.Popen([sys.executable, "-c", _SLOW_WRITER, str(final)], stdout=subprocess.PIPE,
                             env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert child.stdout.readline().strip() == b"writing"
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL
    if existing:
        assert final.read_bytes() == b"the previous, complete file"
    else:
        assert not final.exists()
    leftovers = [p.name for p in tmp_path.iterdir() if p != final]
    assert all(re.fullmatch(r"\.model\.onnx\..*\.tmp", name) for name in leftovers)  # a hidden temp, at most


_SLOW_EXPORT = textwrap.dedent("""
    import sys, time
    import edgecompress.security.registry as registry

    real_copy = registry._copy_hashing

    def slow_copy(src, dst):  # the real copy, then a pause before the rename, to be killed in
        digest = real_copy(src, dst)
        print("copied", flush=True)
        time.sleep(60)
        return digest

    registry._copy_hashing = slow_copy
    registry.Registry(sys.argv[1]).export(sys.argv[2], sys.argv[3], force=True)
""")


def test_a_registry_export_killed_before_its_rename_leaves_the_old_file(tmp_path):
    from edgecompress.security.registry import Registry

    (tmp_path / "artifact").write_bytes(b"registered bytes" * 1000)
    record = Registry(tmp_path / "reg").add(tmp_path / "artifact", {})
    out = tmp_path / "out" / "model.onnx"
    out.parent.mkdir()
    out.write_bytes(b"old export")
    child = subprocess.Popen([sys.executable, "-c", _SLOW_EXPORT, str(tmp_path / "reg"), record.artifact_sha256,
                              str(out)], stdout=subprocess.PIPE, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert child.stdout.readline().strip() == b"copied"
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    assert out.read_bytes() == b"old export"
