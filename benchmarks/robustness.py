"""Robustness benchmark (issue #6, S4/S5): malformed inputs of each kind, and how many give a clean error (an
EdgeCompressError with a message) rather than a traceback from deep inside a library; hostile pickles that must
never run; two processes writing the model registry at once (entries lost); writers killed mid-write (partial
files under a final name). Prints a table, writes JSON with the environment.

    .venv/bin/python benchmarks/robustness.py [--scale 0.2] [--sections npz pt2 ...] [--out FILE.json]

Every section is a function registered with @section; it returns a dict with at least "tried" and "goal_met",
and "notes" (one line for the table). Malformed-input sections return what _try_all counts instead of notes:
"clean_errors", "accepted" (damaged bytes that still load, e.g. a flipped weight) and "unclean" (examples of any
other exception). Add a section (e.g. tamper detection) by writing one more function.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import io
import json
import math
import os
import pickle
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml
from rich.console import Console
from rich.table import Table
from safetensors.torch import save_file

from edgecompress.datasets import dataset_from_arrays, load_dataset
from edgecompress.errors import EdgeCompressError, IntegrityError
from edgecompress.fileio import write_json_atomic
from edgecompress.measure import cpu_summary, environment
from edgecompress.model_io import load_model
from edgecompress.recipe import PARAMS_BY_KIND, builtin_recipe_names, load_recipe, parse_recipe_yaml
from edgecompress.recipe.normalize import TOP_LEVEL_KEYS
from edgecompress.security import (
    append_entry,
    decrypt_bytes,
    encrypt_bytes,
    generate_keypair,
    sign_dir,
    verify_dir,
    verify_log,
    write_key,
    write_manifest,
)
from edgecompress.security.registry import Registry

FACTORY = "edgecompress.testing.tiny_models:TinyMLP"
SEED = 0


@dataclass(frozen=True)
class Section:
    name: str
    what: str
    run: Callable[[Context], dict]
    count: int  # inputs at --scale 1


@dataclass
class Context:
    work: Path
    rng: np.random.Generator
    scale: float

    def n(self, count: int) -> int:
        return max(1, round(count * self.scale))


SECTIONS: list[Section] = []


def section(name: str, what: str, count: int = 0):
    def register(fn: Callable[[Context], dict]) -> Callable[[Context], dict]:
        SECTIONS.append(Section(name, what, fn, count))
        return fn
    return register


# ---- malformed inputs ---------------------------------------------------------------------------------------------

def _try_all(inputs, call) -> dict:
    """Feed every input to ``call``; count loads, clean errors, and anything else (with examples)."""
    tried = clean = accepted = 0
    unclean: list[str] = []
    for item in inputs:
        tried += 1
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                call(item)
            accepted += 1
        except EdgeCompressError as e:
            if str(e).strip():
                clean += 1
            else:
                unclean.append(f"{type(e).__name__} without a message")
        except Exception as e:  # what the benchmark is looking for: a failure outside the error family
            unclean.append(f"{type(e).__name__}: {str(e).strip().splitlines()[0][:200] if str(e).strip() else ''}")
    failed = tried - accepted
    return {"tried": tried, "accepted": accepted, "clean_errors": clean, "unclean": len(unclean),
            "unclean_examples": sorted(set(unclean))[:10],
            "clean_error_rate": None if failed == 0 else clean / failed, "goal_met": not unclean}


def _damage(rng: np.random.Generator, original: bytes) -> bytes:
    """Truncated, byte-flipped, spliced with random bytes, or replaced by random bytes."""
    how = rng.choice(["truncate", "flip", "splice", "random"], p=[0.35, 0.35, 0.15, 0.15])
    if how == "truncate":
        return original[: int(rng.integers(0, max(1, len(original))))]
    if how == "flip":
        out = bytearray(original)
        for _ in range(int(rng.integers(1, 9))):
            out[int(rng.integers(0, len(out)))] = int(rng.integers(0, 256))
        return bytes(out)
    if how == "splice":
        i = int(rng.integers(0, len(original) + 1))
        return original[:i] + rng.bytes(int(rng.integers(1, 65))) + original[i:]
    return rng.bytes(int(rng.integers(0, 513)))


def _files(ctx: Context, name: str, payloads) -> list[Path]:
    """Write each payload to its own file (named ``name`` in a numbered folder) and return the paths."""
    paths = []
    for i, payload in enumerate(payloads):
        path = ctx.work / name.split(".")[0] / str(i) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(payload)
        paths.append(path)
    return paths


_PARAM_KEYS = sorted({k for model in PARAMS_BY_KIND.values() for k in model.model_fields} | {"enabled", "kind"})
_WORDS = ["int8", "int4", "fp16", "onnx", "tflite", "magnitude", "structured", "minmax", "re:.*", "1e-3", "", "x"]


def _random_value(rng: np.random.Generator, depth: int = 0):
    kind = rng.integers(0, 9 if depth < 3 else 6)
    if kind == 0:
        return None
    if kind == 1:
        return bool(rng.integers(0, 2))
    if kind == 2:
        return int(rng.choice([0, 1, -1, 7, 10**30, -10**30, 2**63]))
    if kind == 3:
        return float(rng.choice([0.5, -0.5, 1e300, -1e-300, math.nan, math.inf, -math.inf, 2.0]))
    if kind in (4, 5):
        return str(rng.choice(_WORDS))
    if kind == 6:
        return [_random_value(rng, depth + 1) for _ in range(rng.integers(0, 4))]
    return {_random_key(rng): _random_value(rng, depth + 1) for _ in range(rng.integers(0, 5))}


def _random_key(rng: np.random.Generator):
    roll = rng.random()
    if roll < 0.7:
        return str(rng.choice(_PARAM_KEYS))
    return str(rng.choice(["", "typo", "enabeld", "0", "stages", "quantization"])) if roll < 0.95 else 3


def _random_recipe(rng: np.random.Generator) -> dict:
    return {str(rng.choice(TOP_LEVEL_KEYS)) if rng.random() < 0.85 else "unknown": _random_value(rng, 1)
            for _ in range(rng.integers(0, 5))}


@section("recipe: random mappings", "nested random keys, types, huge numbers, NaN/Inf", 600)
def _recipe_mappings(ctx: Context) -> dict:
    return _try_all((_random_recipe(ctx.rng) for _ in range(ctx.n(600))), load_recipe)


@section("recipe: random YAML", "random recipes dumped as YAML, and random YAML token soup", 600)
def _recipe_yaml(ctx: Context) -> dict:
    tokens = ["quantization", "pruning", "stages", "enabled", "type", ":", " ", "\n", "  ", "- ", "[", "]", "{", "}",
              ",", "&a ", "*a", "!!python/object/apply:os.system ", "!!binary ", "'", '"', "#", "1e999", ".nan",
              "<<: ", "? ", "|", ">", "\t", "%YAML 1.1\n", "---\n", "\x00", "é"]

    def inputs():
        for i in range(ctx.n(600)):
            if i % 2:
                yield yaml.safe_dump(_random_recipe(ctx.rng), allow_unicode=True)
            else:
                yield "".join(ctx.rng.choice(tokens) for _ in range(ctx.rng.integers(1, 60)))
    return _try_all(inputs(), parse_recipe_yaml)


@section("recipe: damaged files", "the builtin recipes truncated, flipped, spliced, replaced", 400)
def _recipe_files(ctx: Context) -> dict:
    import edgecompress

    folder = Path(edgecompress.__file__).parent / "recipes"
    originals = [(folder / f"{name}.yaml").read_bytes() for name in builtin_recipe_names()]
    payloads = [_damage(ctx.rng, originals[i % len(originals)]) for i in range(ctx.n(400))]
    return _try_all(_files(ctx, "recipe.yaml", payloads), load_recipe)


@section("recipe: hostile YAML", "alias bomb, deep nesting, python tags, cycles, 1 MB strings")
def _recipe_hostile(ctx: Context) -> dict:
    bomb = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"] + [
        f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)]
    texts = ["\n".join(bomb), "quantization: " + "[" * 5000 + "]" * 5000, "quantization: " + "{a: " * 3000 + "1"
             + "}" * 3000, "!!python/object/apply:os.system ['touch PWNED']", "quantization: &q {mixed: *q}",
             "quantization: {ignore: &i [*i]}", "name: " + "x" * 1_000_000, "quantization: {calibration_samples: "
             + "9" * 5000 + "}", "pruning: {sparsity: .nan}", "pruning: {sparsity: -.inf}"]
    result = _try_all(texts, parse_recipe_yaml)
    result["executed"] = int(Path("PWNED").exists())
    result["goal_met"] = result["goal_met"] and not result["executed"]
    return result


def _npz_bytes() -> bytes:
    rng = np.random.default_rng(SEED)
    buf = io.BytesIO()
    np.savez(buf, x_train=rng.normal(size=(12, 4)).astype(np.float32), y_train=rng.integers(0, 3, 12),
             x_test=rng.normal(size=(6, 4)).astype(np.float32), y_test=rng.integers(0, 3, 6))
    return buf.getvalue()


@section("data: damaged .npz", "a valid .npz truncated, flipped, spliced, replaced", 600)
def _npz(ctx: Context) -> dict:
    original = _npz_bytes()
    paths = _files(ctx, "data.npz", [_damage(ctx.rng, original) for _ in range(ctx.n(600))])
    return _try_all(paths, lambda p: load_dataset(str(p)))


@section("data: random arrays", "random dtypes (complex, datetime, bytes …), shapes, NaN/Inf, labels", 600)
def _arrays(ctx: Context) -> dict:
    dtypes = [np.float32, np.float64, np.float16, np.int8, np.int64, np.uint8, np.bool_, np.complex64,
              "datetime64[s]", "S3", np.object_]

    def array(rng):
        shape = tuple(int(d) for d in rng.integers(0, 5, size=rng.integers(0, 4)))
        dtype = dtypes[rng.integers(0, len(dtypes))]
        values = rng.normal(size=shape) * rng.choice([1.0, 1e40])
        if values.size and rng.random() < 0.3:
            values.flat[rng.integers(0, values.size)] = rng.choice([np.nan, np.inf])
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return values.astype(dtype)

    def inputs():
        for _ in range(ctx.n(600)):
            yield [array(ctx.rng) if ctx.rng.random() > 0.15 or k % 2 == 0 else None for k in range(4)]
    return _try_all(inputs(), lambda arrays: dataset_from_arrays("random", *arrays))


def _model_files(ctx: Context) -> dict[str, bytes]:
    from edgecompress.testing.tiny_models import TinyConv1d, TinyMLP

    torch.manual_seed(SEED)
    folder = ctx.work / "base"
    folder.mkdir(exist_ok=True)
    save_file(TinyMLP().state_dict(), str(folder / "base.safetensors"))
    model = TinyConv1d().eval()
    program = torch.export.export(model, model.example_inputs(batch_size=2),
                                  dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(program, str(folder / "base.pt2"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(TinyMLP().eval(), (torch.randn(1, 20),), str(folder / "base.onnx"), dynamo=False)
    torch.save(TinyMLP().eval(), str(folder / "base.pt"))
    return {suffix: (folder / f"base.{suffix}").read_bytes() for suffix in ("safetensors", "pt2", "onnx", "pt")}


_BASE: dict[str, bytes] = {}


def _base(ctx: Context, kind: str) -> bytes:
    if not _BASE:
        _BASE.update(_model_files(ctx))
    return _BASE[kind]


@section("model: damaged .safetensors", "weights for a module:factory, damaged", 500)
def _safetensors(ctx: Context) -> dict:
    original = _base(ctx, "safetensors")
    paths = _files(ctx, "w.safetensors", [_damage(ctx.rng, original) for _ in range(ctx.n(500))])
    return _try_all(paths, lambda p: load_model(FACTORY, weights=p))


@section("model: forged safetensors headers", "well-framed files whose JSON header lies (dtype, shape, offsets)", 400)
def _forged(ctx: Context) -> dict:
    names = ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias", "__metadata__"]
    rng = ctx.rng

    def header():
        entries = {}
        for name in rng.choice(names, size=rng.integers(0, 5), replace=False):
            entries[str(name)] = {
                "dtype": str(rng.choice(["F32", "F16", "BF16", "I64", "U8", "BOOL", "XX", ""])),
                "shape": [int(d) for d in rng.choice([-1, 0, 4, 20, 32, 2**40], size=rng.integers(0, 3))],
                "data_offsets": [int(d) for d in rng.choice([0, 16, 128, 2688, 2**62], size=rng.integers(0, 3))]}
        text = json.dumps(entries).encode()
        return len(text).to_bytes(8, "little") + text + rng.bytes(int(rng.integers(0, 4096)))
    paths = _files(ctx, "forged.safetensors", [header() for _ in range(ctx.n(400))])
    return _try_all(paths, lambda p: load_model(FACTORY, weights=p))


@section("model: damaged .pt2", "a torch.export archive damaged as a whole file", 200)
def _pt2(ctx: Context) -> dict:
    original = _base(ctx, "pt2")
    paths = _files(ctx, "m.pt2", [_damage(ctx.rng, original) for _ in range(ctx.n(200))])
    return _try_all(paths, lambda p: load_model(str(p)))


@section("model: .pt2 with damaged members", "one member damaged inside a well-formed zip (reaches torch.export)",
         200)
def _pt2_members(ctx: Context) -> dict:
    with zipfile.ZipFile(io.BytesIO(_base(ctx, "pt2"))) as original:
        members = [(info, original.read(info.filename)) for info in original.infolist()]

    def payload():
        target = int(ctx.rng.integers(0, len(members)))
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w") as dst:
            for i, (info, data) in enumerate(members):  # writestr updates a ZipInfo: give it a copy
                dst.writestr(copy.copy(info), _damage(ctx.rng, data) if i == target else data)
        return out.getvalue()
    paths = _files(ctx, "member.pt2", [payload() for _ in range(ctx.n(200))])
    return _try_all(paths, lambda p: load_model(str(p)))


@section("model: damaged ONNX", "an ONNX model damaged (checked with onnx, never run, always refused)", 300)
def _onnx(ctx: Context) -> dict:
    original = _base(ctx, "onnx")
    paths = _files(ctx, "m.onnx", [original] + [_damage(ctx.rng, original) for _ in range(ctx.n(300) - 1)])
    result = _try_all(paths, lambda p: load_model(str(p)))
    result["goal_met"] = result["goal_met"] and result["accepted"] == 0
    return result


@section("model: damaged pickles", "a torch.save(model) damaged, without and with --trust-pickle", 300)
def _pickles(ctx: Context) -> dict:
    original = _base(ctx, "pt")
    paths = _files(ctx, "m.pt", [_damage(ctx.rng, original) for _ in range(ctx.n(300))])
    refused = _try_all(paths, lambda p: load_model(str(p)))
    trusted = _try_all(paths, lambda p: load_model(str(p), trust_pickle=True))
    return {**trusted, "tried": refused["tried"] + trusted["tried"],
            "clean_errors": refused["clean_errors"] + trusted["clean_errors"],
            "accepted": refused["accepted"] + trusted["accepted"],
            "unclean": refused["unclean"] + trusted["unclean"],
            "unclean_examples": refused["unclean_examples"] + trusted["unclean_examples"],
            "accepted_without_trust": refused["accepted"],
            "goal_met": refused["goal_met"] and trusted["goal_met"] and refused["accepted"] == 0}


class _Hostile:
    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


class _HostileModule(torch.nn.Module):
    def __init__(self, command: str) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(2, 2)
        self.payload = _Hostile(command)


def _legacy_fallback_pt2(ctx: Context, command: str) -> bytes:
    """A .pt2 whose current-format load fails (a short weight), plus the members of the 2.7 format, which
    torch.export.load then unpickles with weights_only=False when the safe load fails."""
    from torch._export.serde.schema import SCHEMA_VERSION

    with zipfile.ZipFile(io.BytesIO(_base(ctx, "pt2"))) as src:
        members = [(info, src.read(info.filename)) for info in src.infolist()]
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as dst:
        for info, data in members:
            dst.writestr(info, data[:4] if info.filename.endswith("weights/weight_0") else data)
        dst.writestr("version", ".".join(map(str, SCHEMA_VERSION)))
        dst.writestr("serialized_exported_program.json",
                     next(d for i, d in members if i.filename.endswith("models/model.json")))
        dst.writestr("serialized_state_dict.pt", pickle.dumps(_Hostile(command)))
        dst.writestr("serialized_constants.pt", b"")
        dst.writestr("serialized_example_inputs.pt", b"")
    return out.getvalue()


@section("model: hostile files", "pickles and .pt2 archives whose loading would run a command; never run, flag or "
         "not")
def _hostile(ctx: Context) -> dict:
    marker = ctx.work / "PWNED"
    command = f"touch {marker}"
    payloads = {"raw.pkl": pickle.dumps(_Hostile(command)), "raw-p0.pkl": pickle.dumps(_Hostile(command), 0),
                "dict.pt": pickle.dumps({"w": _Hostile(command)})}
    for name, obj in (("zip.pt", {"w": _Hostile(command)}), ("module.pth", _HostileModule(command))):
        buf = io.BytesIO()
        torch.save(obj, buf)
        payloads[name] = buf.getvalue()
    payloads["disguised.pt2"] = payloads["zip.pt"]
    payloads["disguised.bin"] = payloads["raw.pkl"]
    payloads["legacy-fallback.pt2"] = _legacy_fallback_pt2(ctx, command)
    paths = [p for name, data in payloads.items() for p in _files(ctx, name, [data])]
    calls = [lambda p: load_model(str(p)), lambda p: load_model(str(p), trust_pickle=True),
             lambda p: load_model(FACTORY, weights=p), lambda p: load_model(FACTORY, weights=p, trust_pickle=True)]
    result = _try_all([(call, p) for call in calls for p in paths], lambda item: item[0](item[1]))
    result["executed"] = int(marker.exists())
    result["goal_met"] = result["goal_met"] and result["accepted"] == 0 and not result["executed"]
    return result


# ---- concurrency and atomicity -------------------------------------------------------------------------------------

_WRITER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from edgecompress.security.registry import Registry

    root, work, tag, n, go = sys.argv[1], Path(sys.argv[2]), sys.argv[3], int(sys.argv[4]), Path(sys.argv[5])
    registry = Registry(root)
    while not go.exists():
        time.sleep(0.005)
    for i in range(n):
        unique = work / f"{tag}-{i}.bin"
        unique.write_bytes(f"{tag} artifact {i}".encode() * 200)
        registry.add(unique, {"writer": tag, "i": i})
        shared = work / f"shared-{tag}-{i}.bin"
        shared.write_bytes(f"shared artifact {i % 7}".encode() * 200)
        registry.add(shared, {"writer": tag, "i": i, "shared": True})
""")


@section("registry: two concurrent writers", "two processes register at once (unique and shared artifacts)", 200)
def _registry(ctx: Context) -> dict:
    n = ctx.n(200)
    root, go = ctx.work / "registry", ctx.work / "go"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    writers = []
    for tag in ("A", "B"):
        (ctx.work / tag).mkdir()
        writers.append(subprocess.Popen([sys.executable, "-c", _WRITER, str(root), str(ctx.work / tag), tag, str(n),
                                         str(go)], env=env, stderr=subprocess.PIPE))
    time.sleep(0.5)
    started = time.perf_counter()
    go.touch()
    codes = [w.wait(timeout=600) for w in writers]
    seconds = time.perf_counter() - started
    registry = Registry(root)
    records = registry.records()
    expected = {(tag, i, shared) for tag in ("A", "B") for i in range(n) for shared in (False, True)}
    found = {(r.body["writer"], r.body["i"], r.body.get("shared", False)) for r in records}
    problems = registry.check()
    leftovers = [str(p) for p in root.rglob("*.tmp")]
    lost = len(expected - found)
    return {"tried": len(expected), "writers": 2, "registrations_per_writer": 2 * n, "records_found": len(records),
            "lost": lost, "entries": len(registry.entries()), "expected_entries": 2 * n + 7,
            "inconsistencies": problems[:10], "temp_files_left": leftovers[:10], "writer_exit_codes": codes,
            "seconds": round(seconds, 2),
            "notes": f"lost {lost}; {len(registry.entries())}/{2 * n + 7} entries; {len(problems)} inconsistencies; "
                     f"{len(leftovers)} temp files left; {seconds:.1f} s",
            "goal_met": lost == 0 and not problems and not leftovers and codes == [0, 0]
            and len(registry.entries()) == 2 * n + 7}


_SLOW_WRITER = textwrap.dedent("""
    import sys, time
    from edgecompress.fileio import atomic_path

    final, chunks = sys.argv[1], int(sys.argv[2])
    with atomic_path(final) as tmp:
        with open(tmp, "wb") as f:
            for i in range(100_000):
                f.write(b"new" * 50_000)
                f.flush()
                if i == chunks:
                    print("writing", flush=True)
                time.sleep(0.002)
""")


@section("atomic outputs: writers killed mid-write", "SIGKILL while writing through atomic_path, new or over old",
         20)
def _killed(ctx: Context) -> dict:
    partial = changed = 0
    kills = ctx.n(20)
    for i in range(kills):
        folder = ctx.work / "kill" / str(i)
        folder.mkdir(parents=True)
        final = folder / "model.onnx"
        existing = i % 2 == 1
        if existing:
            final.write_bytes(b"the previous, complete file")
        child = subprocess.Popen([sys.executable, "-c", _SLOW_WRITER, str(final), str(int(ctx.rng.integers(0, 20)))],
                                 stdout=subprocess.PIPE, env={**os.environ, "OMP_NUM_THREADS": "1"})
        child.stdout.readline()
        time.sleep(float(ctx.rng.uniform(0, 0.05)))
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=60)
        if existing:
            changed += final.read_bytes() != b"the previous, complete file"
        else:
            partial += final.exists()
    return {"tried": kills, "partial_files_under_final_name": partial, "existing_files_changed": changed,
            "notes": f"partial files under the final name {partial}; earlier files changed {changed}",
            "goal_met": partial == 0 and changed == 0}


def _complete(path: Path) -> bool:
    """Whether a file that a run wrote under its final name is whole: it parses as what its name says."""
    import onnx

    try:
        if path.suffix == ".json":
            json.loads(path.read_bytes())
        elif path.suffix == ".onnx":
            onnx.checker.check_model(onnx.load_model(str(path), load_external_data=False))
        return True
    except Exception:
        return False


@section("atomic outputs: compress killed", "`edgecompress compress` SIGKILLed at a random moment: every file under "
         "its final name is whole, the inputs unchanged", 6)
def _compress_killed(ctx: Context) -> dict:
    import hashlib

    from edgecompress.testing.tiny_models import TinyConv1d

    model = TinyConv1d().eval()
    program = torch.export.export(model, model.example_inputs(batch_size=2),
                                  dynamic_shapes=({0: torch.export.Dim("batch")},))
    inputs = {"model": ctx.work / "m.pt2", "data": ctx.work / "d.npz", "recipe": ctx.work / "r.yaml"}
    torch.export.save(program, str(inputs["model"]))
    x = ctx.rng.normal(size=(120, 1, 16)).astype(np.float32)
    y = ctx.rng.integers(0, 4, 120)
    np.savez(inputs["data"], x_train=x[:100], y_train=y[:100], x_test=x[100:], y_test=y[100:])
    inputs["recipe"].write_text("quantization: {enabled: true, calibration_samples: 50}\noutput: {format: onnx}\n")
    digests = {k: hashlib.sha256(p.read_bytes()).hexdigest() for k, p in inputs.items()}
    env = {**os.environ, "OMP_NUM_THREADS": "1", "EDGECOMPRESS_REGISTRY": str(ctx.work / "registry"),
           "EDGECOMPRESS_AUDIT_LOG": str(ctx.work / "audit.jsonl")}
    runs = max(2, ctx.n(6))
    partial, files_checked, finished, full_run = [], 0, 0, None
    for i in range(runs):  # run 0 completes and times a run; the others are killed somewhere inside that time
        out = ctx.work / f"out{i}"
        started = time.perf_counter()
        child = subprocess.Popen([str(Path(sys.executable).parent / "edgecompress"), "compress", str(inputs["model"]),
                                  "--data", str(inputs["data"]), "--recipe", str(inputs["recipe"]), "--out", str(out)],
                                 env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            child.wait(timeout=600 if full_run is None else float(ctx.rng.uniform(0.3, 1.0)) * full_run)
            finished += 1
            full_run = full_run or time.perf_counter() - started
        except subprocess.TimeoutExpired:
            child.send_signal(signal.SIGKILL)
            child.wait(timeout=60)
        for path in sorted(out.rglob("*")) if out.exists() else []:
            if path.is_file() and not path.name.startswith("."):
                files_checked += 1
                if not _complete(path):
                    partial.append(str(path.relative_to(ctx.work)))
    changed = [k for k, p in inputs.items() if hashlib.sha256(p.read_bytes()).hexdigest() != digests[k]]
    registry_problems = Registry(ctx.work / "registry").check()
    return {"tried": runs, "killed": runs - finished, "finished": finished, "full_run_seconds": full_run,
            "files_checked": files_checked,
            "partial_files": partial, "inputs_changed": changed, "registry_problems": registry_problems[:5],
            "notes": f"{runs - finished} killed; {files_checked} files checked, {len(partial)} partial; inputs "
                     f"changed {len(changed)}; registry problems {len(registry_problems)}",
            "goal_met": not partial and not changed and not registry_problems}


# ---- tamper detection (S1 signatures, S2 encryption, S3 audit log) -----------------------------------------------

def _detected(change, check) -> bool:
    """Apply ``change``; True when ``check`` then refuses with an IntegrityError (anything else: not detected)."""
    change()
    try:
        check()
    except IntegrityError:
        return True
    return False


def _signed_folder(ctx: Context, name: str, key) -> Path:
    folder = ctx.work / name
    (folder / "sub").mkdir(parents=True)
    for rel, size in (("model.onnx", 4096), ("sub/baseline.onnx", 8192), ("report.json", 700), ("recipe.json", 300)):
        (folder / rel).write_bytes(ctx.rng.bytes(size))
    sign_dir(folder, key.private_path)
    return folder


@section("signing: tampered folders", "a signed artifact folder: one random bit flipped anywhere, a byte cut or "
         "appended, a file deleted, added, renamed or swapped, the manifest rewritten to match, the signature "
         "flipped, removed or replaced, a wrong public key", 400)
def _signing(ctx: Context) -> dict:
    keys = generate_keypair(ctx.work / "keys" / "signer")
    other = generate_keypair(ctx.work / "keys" / "other")
    pristine = _signed_folder(ctx, "signed", keys)
    files = sorted(p.relative_to(pristine).as_posix() for p in pristine.rglob("*") if p.is_file())
    verify_dir(pristine, keys.public_path)
    structural = [
        lambda f: (f / "extra.bin").write_bytes(b"x"),
        lambda f: (f / "sub" / "extra.bin").write_bytes(b"x"),
        lambda f: (f / "model.onnx").rename(f / "model.old"),
        lambda f: _swap(f / "model.onnx", f / "sub" / "baseline.onnx"),
        lambda f: (f / "model.onnx").write_bytes(b"") or write_manifest(f),  # bytes and manifest changed together
        lambda f: sign_dir(f, other.private_path),  # re-signed by someone else
        lambda f: (f / "link").symlink_to(f / "model.onnx"),
    ]
    tried = detected = 0
    missed: list[str] = []
    for i in range(ctx.n(400)):
        folder = ctx.work / "tamper" / str(i)
        shutil.copytree(pristine, folder, symlinks=True)
        kind = i % 4
        rel = files[int(ctx.rng.integers(len(files)))]
        if kind == 0:  # one bit anywhere in any file, the manifest and signature included
            def change(p=folder / rel):
                data = bytearray(p.read_bytes())
                data[int(ctx.rng.integers(len(data)))] ^= 1 << int(ctx.rng.integers(8))
                p.write_bytes(bytes(data))
            label = f"bit flip in {rel}"
        elif kind == 1:
            cut = bool(ctx.rng.integers(2))
            def change(p=folder / rel, cut=cut):
                data = p.read_bytes()
                p.write_bytes(data[:-1] if cut else data + b"\0")
            label = f"{'truncated' if cut else 'extended'} {rel}"
        elif kind == 2:
            def change(p=folder / rel):
                p.unlink()
            label = f"deleted {rel}"
        else:
            j = int(ctx.rng.integers(len(structural)))
            def change(f=folder, j=j):
                structural[j](f)
            label = f"structural change {j}"
        tried += 1
        if _detected(change, lambda f=folder: verify_dir(f, keys.public_path)):
            detected += 1
        else:
            missed.append(label)
        shutil.rmtree(folder)
    tried += 1  # the untouched folder checked against another key
    if _detected(lambda: None, lambda: verify_dir(pristine, other.public_path)):
        detected += 1
    else:
        missed.append("wrong public key")
    return {"tried": tried, "detected": detected, "missed_examples": sorted(set(missed))[:10],
            "notes": f"{detected}/{tried} tampered folders refused", "goal_met": detected == tried}


def _swap(a: Path, b: Path) -> None:
    data = a.read_bytes()
    a.write_bytes(b.read_bytes())
    b.write_bytes(data)


@section("encryption: tampered ciphertexts", "AES-256-GCM files: a random bit flipped, cut at a random length, "
         "bytes appended, chunks swapped, the wrong key", 600)
def _encryption(ctx: Context) -> dict:
    key, wrong = write_key(ctx.work / "aes.key"), write_key(ctx.work / "other.key")
    plain = ctx.rng.bytes(3 * 4096 + 123)
    blob = encrypt_bytes(plain, key=key, name="model.onnx", chunk_size=4096)
    assert decrypt_bytes(blob, key=key) == plain
    tried = detected = 0
    for i in range(ctx.n(600)):
        data = bytearray(blob)
        kind = i % 3
        if kind == 0:
            data[int(ctx.rng.integers(len(data)))] ^= 1 << int(ctx.rng.integers(8))
        elif kind == 1:
            data = data[:int(ctx.rng.integers(len(data)))]
        else:
            data += ctx.rng.bytes(int(ctx.rng.integers(1, 64)))
        tried += 1
        detected += _detected(lambda: None, lambda d=bytes(data): decrypt_bytes(d, key=key))
    n = len(blob)
    swapped = blob[: n - 2 * (4096 + 16)] + blob[n - (4096 + 16):] + blob[n - 2 * (4096 + 16): n - (4096 + 16)]
    for data, k in ((swapped, key), (blob, wrong)):  # chunks swapped; the wrong key
        tried += 1
        detected += _detected(lambda: None, lambda d=data, k=k: decrypt_bytes(d, key=k))
    return {"tried": tried, "detected": detected, "notes": f"{detected}/{tried} tampered ciphertexts refused",
            "goal_met": detected == tried}


@section("audit log: edited chains", "a 30-entry hash-chained log: an entry edited (with or without its own hash "
         "recomputed), removed, duplicated, two swapped, a line cut short, the end cut (checked with the head hash)",
         300)
def _audit(ctx: Context) -> dict:
    log = ctx.work / "audit.jsonl"
    for i in range(30):
        append_entry("compress", inputs={"model": f"{i:064x}"}, outputs={"model.onnx": f"{i + 1:064x}"},
                     result={"status": "ok"}, path=log)
    head = verify_log(log).head
    lines = log.read_text().splitlines(keepends=True)
    tried = detected = 0
    for i in range(ctx.n(300)):
        edited = list(lines)
        a, b = sorted(int(x) for x in ctx.rng.choice(len(lines), size=2, replace=False))
        kind = i % 6
        if kind == 0:  # a value edited, the entry's hash left as it was
            edited[a] = edited[a].replace('"ok"', '"failed"')
        elif kind == 1:  # a value edited and the entry's own hash recomputed: the next entry's link breaks
            entry = json.loads(edited[a])
            entry["result"] = {"status": "failed"}
            entry.pop("hash")
            entry["hash"] = hashlib.sha256(json.dumps(entry, sort_keys=True, separators=(",", ":"))
                                           .encode()).hexdigest()
            edited[a] = json.dumps(entry) + "\n"
            if a == len(lines) - 1:
                edited.append(lines[a])  # keep a successor whose link shows the change
        elif kind == 2:
            del edited[a]
        elif kind == 3:
            edited.insert(b, edited[a])
        elif kind == 4:
            edited[a], edited[b] = edited[b], edited[a]
        else:
            edited[a] = edited[a][: int(ctx.rng.integers(1, len(edited[a]) - 1))]
        changed = ctx.work / f"audit-{i}.jsonl"
        changed.write_text("".join(edited))
        tried += 1
        detected += _detected(lambda: None, lambda p=changed: verify_log(p, head=head))
        changed.unlink()
    cut = ctx.work / "audit-cut.jsonl"
    cut.write_text("".join(lines[:-3]))
    tried += 1
    detected += _detected(lambda: None, lambda: verify_log(cut, head=head))
    return {"tried": tried, "detected": detected, "notes": f"{detected}/{tried} edited logs refused",
            "goal_met": detected == tried}


# ---- report ---------------------------------------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every section's input count")
    parser.add_argument("--sections", nargs="+", help="run only sections whose name contains one of these words")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "robustness.json")
    args = parser.parse_args()
    console = Console(width=200)
    chosen = [s for s in SECTIONS if not args.sections or any(w in s.name for w in args.sections)]
    results = []
    with tempfile.TemporaryDirectory(prefix="edgecompress-robustness-") as tmp:
        previous = os.getcwd()
        os.chdir(tmp)  # a hostile input that got to run would leave its marker here, where it is looked for
        try:
            for i, sec in enumerate(chosen):
                work = Path(tmp) / f"section-{i}"
                work.mkdir()
                started = time.perf_counter()
                result = sec.run(Context(work, np.random.default_rng([SEED, i]), args.scale))
                results.append({"section": sec.name, "what": sec.what, **result,
                                "wall_seconds": round(time.perf_counter() - started, 2)})
                console.print(f"done {sec.name}: {'goal met' if result['goal_met'] else 'GOAL MISSED'}")
        finally:
            os.chdir(previous)
    _print(console, results)
    summary = {"malformed_inputs": sum(r["tried"] for r in results if "clean_errors" in r),
               "failed_inputs": sum(r["tried"] - r["accepted"] for r in results if "clean_errors" in r),
               "clean_errors": sum(r["clean_errors"] for r in results if "clean_errors" in r),
               "unclean": sum(r["unclean"] for r in results if "clean_errors" in r),
               "hostile_executed": sum(r.get("executed", 0) for r in results),
               "registry_lost_entries": sum(r.get("lost", 0) for r in results),
               "tamper_cases": sum(r["tried"] for r in results if "detected" in r),
               "tamper_detected": sum(r["detected"] for r in results if "detected" in r),
               "goal_met": all(r["goal_met"] for r in results)}
    write_json_atomic(args.out, {"environment": environment(), "scale": args.scale, "seed": SEED,
                                 "summary": summary, "sections": results})
    console.print(f"{summary['clean_errors']} of {summary['failed_inputs']} failing malformed inputs gave a clean "
                  f"error ({summary['unclean']} did not); hostile files run: {summary['hostile_executed']}; "
                  f"registry entries lost: {summary['registry_lost_entries']}; tampering detected: "
                  f"{summary['tamper_detected']} of {summary['tamper_cases']}")
    console.print(f"wrote {args.out}")
    if not summary["goal_met"]:
        sys.exit(1)


def _print(console: Console, results: list[dict]) -> None:
    table = Table(title="edgecompress robustness: malformed inputs, hostile files, concurrency, atomic writes")
    for col in ("section", "tried", "loaded", "clean errors", "other failures", "clean %", "notes", "goal"):
        table.add_column(col, justify="left" if col in ("section", "notes") else "right")
    for r in results:
        notes = r.get("notes", "")
        if "clean_errors" in r:
            failed = r["tried"] - r["accepted"]
            rate = "–" if failed == 0 else f"{100 * r['clean_errors'] / failed:.1f}"
            notes = "; ".join([*r["unclean_examples"][:2], *([f"run: {r['executed']}"] if "executed" in r else [])])
            row = (str(r["accepted"]), str(r["clean_errors"]), str(r["unclean"]), rate)
        else:  # other kinds of section say what they found in "notes"
            row = ("–", "–", "–", "–")
        table.add_row(r["section"], str(r["tried"]), *row, notes, "met" if r["goal_met"] else "MISSED")
    console.print(table)
    console.print(f"CPU: {cpu_summary()}")


if __name__ == "__main__":
    main()
