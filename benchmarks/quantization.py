"""Quantization benchmark: every quantization scheme of edgecompress next to its peers (ONNX Runtime's
quantize_static / quantize_dynamic, torch.ao's quantize_dynamic, NNCF's post-training quantization), on the
MNIST-1D CNN, the digits CNN and the pretrained sentence encoder all-MiniLM-L6-v2. Each row is measured on
the artifact a device would run: quality (test accuracy for the CNNs; for MiniLM, cosine similarity of the
embeddings to float32 PyTorch and retrieval on standard-library docstrings), artifact bytes, latency p50 at
batch 1 on one thread, and the time quantization took. Prints one table per model and writes JSON.

    .venv/bin/python benchmarks/quantization.py [--quick] [--models mnist1d_cnn digits_cnn minilm]
        [--variants SUBSTRING ...] [--out benchmarks/results/quantization.json]

A scheme is one entry of VARIANTS. Ours are recipe sections run through ``compress`` (the product's front
door); a scheme that this version does not have yet shows up as "unavailable" with the product's message.
MiniLM takes two int64 inputs (input_ids, attention_mask), which ``compress``'s data model (one float32
tensor) cannot carry, so on MiniLM our rows call the lower-level verbs directly (MINILM_ROUTES)."""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import logging
import os
import re
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table
from torch import nn

from edgecompress import MeasureSettings, compress
from edgecompress.datasets import Dataset, load_dataset
from edgecompress.errors import UnsupportedError
from edgecompress.export import get_exporter
from edgecompress.fileio import write_json_atomic
from edgecompress.measure import (
    accuracy,
    artifact_bytes,
    cpu_summary,
    environment,
    fidelity,
    measure_latency,
    state_dict_bytes,
)
from edgecompress.model_io import load_model
from edgecompress.training import predict

CNN_MODELS = ("mnist1d_cnn", "digits_cnn")
ALL_MODELS = (*CNN_MODELS, "minilm")
Inputs = tuple[np.ndarray, ...]  # one array per model input
Runner = Callable[[Inputs], np.ndarray]


class Skipped(Exception):  # noqa: N818 (a status, not a failure)
    """This variant does not apply to this model, or a package it needs is not installed."""


# ---------------------------------------------------------------------------------------------------- models
@dataclass
class Case:
    """One model under test, its data, and how its outputs are scored."""

    name: str
    model: nn.Module
    example_inputs: tuple[torch.Tensor, ...]  # batch 1: export and latency
    calibration: tuple[torch.Tensor, ...]  # every input's calibration samples, same count
    eval_inputs: tuple[torch.Tensor, ...]
    reference: np.ndarray  # float32 PyTorch outputs on eval_inputs
    score: Callable[[np.ndarray], dict]
    dataset: Dataset | None = None  # what compress() takes; None when the model's inputs do not fit one
    workdir: Path | None = None
    _float_onnx: Path | None = field(default=None, repr=False)

    def float_onnx(self) -> Path:
        """The float32 model exported once by edgecompress's ONNX exporter; the peers quantize this file."""
        if self._float_onnx is None:
            path = self.workdir / f"{self.name}-fp32.onnx"
            get_exporter("onnx").export(self.model, self.example_inputs, path, scheme="fp32")
            self._float_onnx = path
        return self._float_onnx


def cnn_case(name: str, quick: bool, workdir: Path) -> Case:
    loaded = load_model(f"builtin:{name}")
    dataset = load_dataset(loaded.dataset)
    model = loaded.model.eval()
    reference = predict(model, dataset.x_test).detach().numpy()
    labels = dataset.y_test.numpy()

    def score(outputs: np.ndarray) -> dict:
        return {"accuracy": accuracy(outputs, labels),
                "top1_agreement": fidelity(reference, outputs)["top1_agreement"]}

    n_calibration = 100 if quick else 500
    return Case(name, model, (dataset.x_test[:1],), (dataset.calibration_inputs(n_calibration, seed=0),),
                (dataset.x_test,), reference, score, dataset, workdir)


def minilm_case(quick: bool, workdir: Path) -> Case:
    from edgecompress.datasets.retrieval import CALIBRATION_MODULES, docstring_pairs, retrieval_metrics
    from edgecompress.models.minilm import encode, load_minilm, tokenize

    tokenizer, model = load_minilm()
    pairs = docstring_pairs(max_pairs=64 if quick else 300)
    texts = [p.query for p in pairs] + [p.document for p in pairs]
    ids, mask = tokenize(tokenizer, texts)
    # Calibration text comes from other modules than the evaluation text; queries and documents alternate.
    n_calibration = 32 if quick else 128
    calibration_pairs = docstring_pairs(CALIBRATION_MODULES, max_pairs=n_calibration // 2, exclude=set(texts))
    calibration = tokenize(tokenizer, [t for p in calibration_pairs for t in (p.query, p.document)])
    reference = encode(model, ids, mask).numpy()
    n = len(pairs)

    def score(outputs: np.ndarray) -> dict:
        cos = (outputs * reference).sum(axis=1) / np.maximum(
            np.linalg.norm(outputs, axis=1) * np.linalg.norm(reference, axis=1), 1e-12)
        metrics = retrieval_metrics(outputs[:n], outputs[n:])
        return {"cosine_mean": float(cos.mean()), "cosine_min": float(cos.min()), "recall@1": metrics["recall@1"],
                "recall@5": metrics["recall@5"], "mrr": metrics["mrr"], "pairs": n}

    return Case("minilm", model, (ids[:1], mask[:1]), calibration, (ids, mask), reference, score, None, workdir)


# --------------------------------------------------------------------------------------------------- runners
def ort_session(path: Path, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    # As edgecompress's own runner: MatMulNBits computes in float32, as the weight-only representation does.
    options.add_session_config_entry("session.qdq_matmulnbits_accuracy_level", "1")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def ort_runner(path: Path, threads: int) -> Runner:
    """Feeds every model input by position, in its own dtype (edgecompress's runner feeds one float input)."""
    session = ort_session(path, threads)
    names = [i.name for i in session.get_inputs()]

    def run(inputs: Inputs) -> np.ndarray:
        return session.run(None, dict(zip(names, inputs, strict=True)))[0]

    return run


def torch_runner(model: nn.Module) -> Runner:
    model.eval()

    def run(inputs: Inputs) -> np.ndarray:
        with torch.no_grad():
            return model(*(torch.from_numpy(a) for a in inputs)).detach().float().numpy()

    return run


def run_batches(runner: Runner, inputs: tuple[torch.Tensor, ...], batch_size: int) -> np.ndarray:
    n = inputs[0].shape[0]
    return np.concatenate([runner(tuple(t[i:i + batch_size].numpy() for t in inputs)) for i in range(0, n, batch_size)])


def calibration_feeds(case: Case, path: Path, batch_size: int) -> list[dict[str, np.ndarray]]:
    """The calibration samples as ONNX Runtime feeds (input name → array), ``batch_size`` samples each."""
    names = [i.name for i in ort_session(path, 1).get_inputs()]
    n = case.calibration[0].shape[0]
    return [{name: t[i:i + batch_size].numpy() for name, t in zip(names, case.calibration, strict=True)}
            for i in range(0, n, batch_size)]


# -------------------------------------------------------------------------------------------------- variants
@dataclass
class Built:
    runner: Runner
    runtime: str
    size_bytes: int
    quantize_seconds: float | None
    artifact: str
    outputs: np.ndarray | None = None  # already known (the float reference): no second evaluation
    note: str | None = None


@dataclass(frozen=True)
class Variant:
    name: str
    source: str  # edgecompress | onnxruntime | torch.ao | nncf | torch
    bits: str  # fp32 | fp16 | int8 | int4 | mixed
    kind: str  # float | static (weights and activations) | dynamic | weight-only | mixed: rows compared like to like
    build: Callable[[Case, Path, int], Built]  # (case, scratch dir, threads) → Built
    models: tuple[str, ...] = ALL_MODELS


def float_torch(case: Case, scratch: Path, threads: int) -> Built:
    return Built(torch_runner(case.model), "torch eager", state_dict_bytes(case.model), None,
                 "state_dict (safetensors)", outputs=case.reference)


def float_onnx(case: Case, scratch: Path, threads: int) -> Built:
    path = case.float_onnx()
    return Built(ort_runner(path, threads), "onnxruntime", artifact_bytes(path), None, path.name)


# Our schemes as recipe sections; ``compress`` refuses, before any work, what this version cannot run yet.
BASE = {"enabled": True, "calibration_samples": 500}
OUR_RECIPES: dict[str, dict] = {
    "int8 static": {"type": "int8"},
    "int8 static +CLE +bias corr.": {"type": "int8", "equalization": True, "bias_correction": True},
    "int8 static +AdaRound": {"type": "int8", "adaround": True},
    "int8 dynamic": {"type": "int8", "strategy": "dynamic"},
    # MiniLM's six FFN down-projections read GELU outputs whose outliers a per-tensor run-time scale cannot
    # cover (measured: cosine 0.9917 with them in int8, 0.9957 without); they stay float.
    "int8 dynamic, FFN down-proj. float": {"type": "int8", "strategy": "dynamic",
                                           "ignore": ["re:.*layer\\.\\d+\\.output\\.dense"]},
    # The same for static INT8, where per-tensor calibrated scales of the attention and FFN output projections
    # inputs lose most (measured on 128 texts: cosine 0.942 all-int8, 0.993 with those 12 layers float).
    "int8 static, output proj. float": {"type": "int8",
                                        "ignore": ["re:.*layer\\.\\d+\\.(attention\\.)?output\\.dense"]},
    # SmoothQuant: activation outliers moved into the weights, α chosen per layer on the calibration data
    "int8 static +SmoothQuant": {"type": "int8", "smoothing": True},
    "int8 dynamic +SmoothQuant": {"type": "int8", "strategy": "dynamic", "smoothing": True},
    "int8 QAT": {"type": "int8", "strategy": "quantization_aware"},
    "fp16": {"type": "fp16"},
    "int4 weight-only": {"type": "int4"},
    "mixed 4/8": {"type": "mixed"},
}
OUR_KINDS = {"int8 static": ("int8", "static"), "int8 static +CLE +bias corr.": ("int8", "static"),
             "int8 static +AdaRound": ("int8", "static"), "int8 dynamic": ("int8", "dynamic"),
             "int8 dynamic, FFN down-proj. float": ("int8", "dynamic"),
             "int8 static, output proj. float": ("int8", "static"),
             "int8 static +SmoothQuant": ("int8", "static"), "int8 dynamic +SmoothQuant": ("int8", "dynamic"),
             "int8 QAT": ("int8", "static"), "fp16": ("fp16", "float"), "int4 weight-only": ("int4", "weight-only"),
             "mixed 4/8": ("mixed", "mixed")}


def ours(label: str, quick: bool) -> Callable[[Case, Path, int], Built]:
    section = {**BASE, **OUR_RECIPES[label]}
    if quick:
        section["calibration_samples"] = 100

    def build(case: Case, scratch: Path, threads: int) -> Built:
        if case.dataset is None:
            return minilm_route(label, case, scratch, threads)
        if label in MINILM_ONLY:
            raise Skipped("a MiniLM-specific layer selection")
        recipe = {"quantization": section, "output": {"format": "onnx"}}
        result = compress(case.model, recipe, data=case.dataset, example_inputs=case.example_inputs,
                          out_dir=scratch, measure=MeasureSettings(warmup=1, iters=5, max_seconds=1.0,
                                                                    peak_rss=False))
        stage = next(s for s in result.report["stages"] if s["name"] == "quantize")
        artifact = result.artifacts[-1]
        run = get_exporter(artifact.format).runner(artifact.path, threads=threads)
        note = stage.get("note")
        return Built(lambda inputs: run(inputs[0]), get_exporter(artifact.format).runtime,
                     artifact_bytes(artifact.path), stage.get("quantize_seconds", stage["seconds"]),
                     artifact.path.name, note=note)

    return build


# On MiniLM: the product's verbs a user would call for a two-input model, then its ONNX exporter.
def _minilm_batches(case: Case, size: int = 16) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return list(zip(case.calibration[0].split(size), case.calibration[1].split(size), strict=True))


def _minilm_static(case: Case, config_kwargs: dict) -> nn.Module:
    from edgecompress.quantization import QuantConfig, quantize

    config = QuantConfig(reduce_range=get_exporter("onnx").saturates_int8_weights(), **config_kwargs)
    return quantize(case.model, config, calibration=_minilm_batches(case), example_inputs=case.example_inputs)


def _minilm_adaround(case: Case) -> nn.Module:
    """AdaRound on a CPU budget that a 22M-parameter encoder allows: each of the 36 layers fits its rounding
    with 200 Adam steps on mini-batches of 4 texts (512 token rows), instead of the CNNs' 1000 steps of 32
    samples (measured: the CNN setting would take about two hours here)."""
    from edgecompress.quantization import QuantConfig, calibrate, convert, prepare
    from edgecompress.quantization.adaround import AdaRoundSettings, adaround

    config = QuantConfig(reduce_range=get_exporter("onnx").saturates_int8_weights())
    batches = _minilm_batches(case)
    gm = prepare(case.model, config, case.example_inputs)
    calibrate(gm, batches)
    adaround(gm, batches, AdaRoundSettings(iterations=200, batch_size=4))
    return convert(gm)


def _minilm_dynamic(case: Case, ignore: tuple[str, ...] = ()) -> nn.Module:
    from edgecompress.quantization.dynamic import DynamicConfig, quantize_dynamic

    return quantize_dynamic(case.model, DynamicConfig(reduce_range=get_exporter("onnx").saturates_int8_weights(),
                                                      ignore=ignore))


def _minilm_dynamic_smoothed(case: Case) -> nn.Module:
    from edgecompress.quantization import SmoothingConfig, smooth

    reduce_range = get_exporter("onnx").saturates_int8_weights()
    smoothed = smooth(case.model, _minilm_batches(case), SmoothingConfig(reduce_range=reduce_range), inputs=2)
    return _minilm_dynamic(dataclasses.replace(case, model=smoothed.model))


def _minilm_int4(case: Case) -> nn.Module:
    """Weight-only INT4 by module swap (no tracing needed), the word-embedding table included."""
    from edgecompress.quantization import QuantConfig
    from edgecompress.quantization.weight_only import quantize_weights

    return quantize_weights(case.model, QuantConfig(weight_bits=4, group_size=32, weight_only=True))


def _minilm_qat(case: Case, epochs: int = 3) -> nn.Module:
    """QAT as distillation: MiniLM has no labelled task here, so the quantized encoder learns to reproduce the
    float encoder's embeddings (loss 1 − cosine) on the calibration texts. Learnable step sizes (LSQ) at a
    larger learning rate than the pretrained weights."""
    from edgecompress.quantization.lsq import LsqQuantizer
    from edgecompress.quantization.qat import QATConfig, QuantizationAwareTraining

    batches = _minilm_batches(case)
    qat = QuantizationAwareTraining(case.model, QATConfig(bits=8, epochs=epochs,
                                                          reduce_range=get_exporter("onnx").saturates_int8_weights()),
                                    calibration=batches, example_inputs=case.example_inputs)
    with torch.no_grad():
        targets = [case.model(ids, mask) for ids, mask in batches]
    scales = {id(p) for m in qat.model.modules() if isinstance(m, LsqQuantizer) for p in m.parameters()}
    params = [p for p in qat.model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam([{"params": [p for p in params if id(p) in scales], "lr": 1e-3},
                                  {"params": [p for p in params if id(p) not in scales], "lr": 1e-5}])
    generator = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        for i in torch.randperm(len(batches), generator=generator).tolist():
            (ids, mask), target = batches[i], targets[i]
            loss = (1 - torch.nn.functional.cosine_similarity(qat.model(ids, mask), target)).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            qat.step()
    return qat.finalize()


def _minilm_mixed(case: Case) -> nn.Module:
    """The recipe's mixed 4/8 defaults (budget 0.75 × the INT8 weight bytes, SQNR sensitivity) on 32 calibration
    texts for the sensitivity analysis (it quantizes the model once per layer and candidate)."""
    import dataclasses

    from edgecompress.quantization import QuantConfig, quantize
    from edgecompress.quantization.mixed import plan_mixed_precision

    base = QuantConfig(reduce_range=get_exporter("onnx").saturates_int8_weights(), group_size=32)
    ids, mask = case.calibration
    plan = plan_mixed_precision(case.model, base, (ids[:32], mask[:32]), size_budget=0.75, bits=(4, 8),
                                example_inputs=case.example_inputs)
    config = dataclasses.replace(base, layer_bits=tuple(plan.layer_bits.items()))
    return quantize(case.model, config, calibration=_minilm_batches(case), example_inputs=case.example_inputs)


MINILM_ONLY = {"int8 dynamic, FFN down-proj. float", "int8 static, output proj. float"}


MINILM_ROUTES: dict[str, tuple[str, Callable[[Case], nn.Module]]] = {
    "int8 static": ("int8", lambda case: _minilm_static(case, {})),
    # CLE finds no pair to equalize in MiniLM (its layers meet through GELU, LayerNorm and attention, not a
    # ReLU-family activation), so that row is bias correction alone
    "int8 static +CLE +bias corr.": ("int8", lambda case: _minilm_static(case, {"equalization": True,
                                                                                "bias_correction": True})),
    "int8 static +AdaRound": ("int8", _minilm_adaround),
    "int8 dynamic": ("int8", _minilm_dynamic),
    "int8 dynamic, FFN down-proj. float": (
        "int8", lambda case: _minilm_dynamic(case, tuple(OUR_RECIPES["int8 dynamic, FFN down-proj. float"]["ignore"]))),
    "int8 static, output proj. float": (
        "int8", lambda case: _minilm_static(case, {"ignore": tuple(OUR_RECIPES["int8 static, output proj. float"][
            "ignore"])})),
    "int8 static +SmoothQuant": ("int8", lambda case: _minilm_static(case, {"smoothing": True})),
    "int8 dynamic +SmoothQuant": ("int8", _minilm_dynamic_smoothed),
    "int8 QAT": ("int8", _minilm_qat),
    "fp16": ("fp16", lambda case: case.model),  # the exporter converts for scheme fp16
    "int4 weight-only": ("int4", _minilm_int4),
    "mixed 4/8": ("mixed", _minilm_mixed),
}
def minilm_route(label: str, case: Case, scratch: Path, threads: int) -> Built:
    scheme, quantize_fn = MINILM_ROUTES[label]
    started = time.perf_counter()
    qmodel = quantize_fn(case)
    seconds = time.perf_counter() - started
    path = scratch / f"minilm-{scheme}.onnx"
    get_exporter("onnx").export(qmodel, case.example_inputs, path, scheme=scheme)
    return Built(ort_runner(path, threads), "onnxruntime", artifact_bytes(path), seconds, path.name)


def _ort_preprocessed(case: Case, scratch: Path) -> Path:
    """ONNX Runtime's recommended pre-processing (shape inference, graph optimisation) before quantizing."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    out = scratch / "preprocessed.onnx"
    quant_pre_process(str(case.float_onnx()), str(out), skip_symbolic_shape=True)
    return out


def ort_static(case: Case, scratch: Path, threads: int, op_types: list[str] | None = None) -> Built:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self, feeds):
            self.feeds = iter(feeds)

        def get_next(self):
            return next(self.feeds, None)

    out = scratch / f"{case.name}-ort-static.onnx"
    feeds = calibration_feeds(case, case.float_onnx(), 8)
    # ONNX Runtime's advice for x86 without VNNI is 7-bit weights, as edgecompress picks there too
    reduce_range = get_exporter("onnx").saturates_int8_weights()
    started = time.perf_counter()
    source = _ort_preprocessed(case, scratch)
    # Not CalibMaxIntermediateOutputs: in ORT 1.32 it discards each full chunk without merging its ranges.
    logging.disable(logging.WARNING)  # one root-logger line per 1-D weight it cannot quantize per channel
    try:
        quantize_static(str(source), str(out), Reader(feeds), quant_format=QuantFormat.QDQ, per_channel=True,
                        reduce_range=reduce_range, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax, op_types_to_quantize=op_types)
    finally:
        logging.disable(logging.NOTSET)
    seconds = time.perf_counter() - started
    ops = "all ops" if op_types is None else "+".join(op_types) + " only"
    return Built(ort_runner(out, threads), "onnxruntime", artifact_bytes(out), seconds, out.name,
                 note=f"QDQ u8/s8 per-channel, MinMax, {ops}{', 7-bit weights' if reduce_range else ''}")


def ort_dynamic(case: Case, scratch: Path, threads: int) -> Built:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    out = scratch / f"{case.name}-ort-dynamic.onnx"
    started = time.perf_counter()
    source = _ort_preprocessed(case, scratch)
    quantize_dynamic(str(source), str(out), weight_type=QuantType.QInt8)
    seconds = time.perf_counter() - started
    return Built(ort_runner(out, threads), "onnxruntime", artifact_bytes(out), seconds, out.name)


def torchao_dynamic(case: Case, scratch: Path, threads: int) -> Built:
    from torch.ao.quantization import quantize_dynamic  # deprecated in torch 2.13; a peer, not our product

    started = time.perf_counter()
    qmodel = quantize_dynamic(copy.deepcopy(case.model), {nn.Linear}, dtype=torch.qint8)
    seconds = time.perf_counter() - started
    path = scratch / f"{case.name}-torchao-dynamic.pt"
    torch.save(qmodel.state_dict(), path)  # packed int8 weights have no safetensors form
    return Built(torch_runner(qmodel), "torch eager", artifact_bytes(path), seconds, "state_dict (torch.save)",
                 note="Linear layers only")


def nncf_ptq(case: Case, scratch: Path, threads: int) -> Built:
    try:
        import nncf
        import onnx
    except ImportError:
        raise Skipped("nncf is not installed (pip install nncf -c constraints.txt)") from None
    from onnx.version_converter import convert_version

    out = scratch / f"{case.name}-nncf.onnx"
    feeds = calibration_feeds(case, case.float_onnx(), 1)
    started = time.perf_counter()
    model_type = nncf.ModelType.TRANSFORMER if case.dataset is None else None
    # Opset 20: with NNCF's int8 activations in an opset-21 graph, ONNX Runtime 1.32's QDQ propagation builds
    # a QuantizeLinear it then rejects ("output_dtype INT8 does not match y_zero_point type UINT8").
    source = convert_version(onnx.load(str(case.float_onnx())), 20)
    quantized = nncf.quantize(source, nncf.Dataset(feeds), subset_size=len(feeds), model_type=model_type)
    onnx.save(quantized, str(out))
    seconds = time.perf_counter() - started
    return Built(ort_runner(out, threads), "onnxruntime", artifact_bytes(out), seconds, out.name,
                 note="ONNX backend on the float model at opset 20" + (", transformer preset" if model_type else ""))


def variants(quick: bool) -> list[Variant]:
    return [
        Variant("fp32 (PyTorch)", "torch", "fp32", "float", float_torch),
        Variant("fp32 ONNX", "edgecompress", "fp32", "float", float_onnx),
        *(Variant(label, "edgecompress", *OUR_KINDS[label], ours(label, quick)) for label in OUR_RECIPES),
        Variant("ORT quantize_static", "onnxruntime", "int8", "static", ort_static),
        # ONNX Runtime's static INT8 limited to the matrix products: its usual setting for transformers
        Variant("ORT quantize_static MatMul", "onnxruntime", "int8", "static",
                lambda case, scratch, threads: ort_static(case, scratch, threads, ["MatMul"]), models=("minilm",)),
        Variant("ORT quantize_dynamic", "onnxruntime", "int8", "dynamic", ort_dynamic),
        Variant("torch.ao quantize_dynamic", "torch.ao", "int8", "dynamic", torchao_dynamic),
        Variant("NNCF quantize", "nncf", "int8", "static", nncf_ptq),
    ]


# ------------------------------------------------------------------------------------------------- measuring
def measure(case: Case, variant: Variant, args, timing: dict) -> dict:
    row = {"model": case.name, "variant": variant.name, "source": variant.source, "bits": variant.bits,
           "kind": variant.kind}
    with tempfile.TemporaryDirectory(prefix="qbench-") as tmp:
        try:
            built = variant.build(case, Path(tmp), args.threads)
        except Skipped as e:
            return {**row, "status": "skipped", "detail": str(e)}
        except UnsupportedError as e:
            return {**row, "status": "unavailable", "detail": _brief(e)}
        except Exception as e:  # a peer or a scheme failing on this model is a result, not a crash
            return {**row, "status": "failed", "detail": _brief(e)}
        started = time.perf_counter()
        outputs = (built.outputs if built.outputs is not None
                   else run_batches(built.runner, case.eval_inputs, args.eval_batch))
        eval_seconds = time.perf_counter() - started
        x1 = tuple(t[:1].numpy() for t in case.eval_inputs)
        latency = measure_latency(lambda: built.runner(x1), **timing)
    return {**row, "status": "ok", "detail": built.note, "runtime": built.runtime, "artifact": built.artifact,
            "size_bytes": built.size_bytes, "quantize_seconds": built.quantize_seconds,
            "latency_b1_p50_ms": latency["p50"], "latency_b1_p90_ms": latency["p90"],
            "eval_seconds": eval_seconds, **case.score(outputs)}


def _brief(e: Exception) -> str:
    """The error's type, the first line of its message and, for a wrapped error, the last line that names an
    error (the cause), without terminal colour codes."""
    lines = [line.strip() for line in re.sub(r"\x1b\[[0-9;]*m", "", str(e)).splitlines() if line.strip()]
    if not lines:
        return type(e).__name__
    cause = next((line for line in reversed(lines[1:]) if "Error" in line), None)
    return f"{type(e).__name__}: {lines[0][:300]}" + (f" … {cause[:200]}" if cause else "")


def add_relative(rows: list[dict]) -> None:
    """Size relative to the float32 ONNX file, and the change of the task metric (accuracy, or recall@1 for
    MiniLM) in points relative to float32 PyTorch: negative is worse."""
    for model in {r["model"] for r in rows}:
        group = [r for r in rows if r["model"] == model and r["status"] == "ok"]
        base = next((r for r in group if r["variant"] == "fp32 ONNX"), None)
        ref = next((r for r in group if r["variant"] == "fp32 (PyTorch)"), None)
        for r in group:
            r["size_vs_fp32_onnx"] = r["size_bytes"] / base["size_bytes"] if base else None
            key = "accuracy" if "accuracy" in r else "recall@1"
            # rounded: 3 of 300 queries is 1 point, not 0.9999999999999953
            r["change_points"] = round(100 * (r[key] - ref[key]), 9) if ref else None


def goals(rows: list[dict]) -> list[dict]:
    """The issue's goals, each met (True), not met (False) or not measured (None: a row it needs is missing).
    INT8 rows are compared like to like: static with static, dynamic with dynamic."""
    ok = [r for r in rows if r["status"] == "ok"]
    models = {r["model"] for r in rows}
    found = []

    def best(model: str, ours: bool, kind: str, key: str):
        values = [r[key] for r in ok if r["model"] == model and r["bits"] == "int8" and r["kind"] == kind
                  and (r["source"] == "edgecompress") == ours]
        return max(values, default=None)

    for model in (m for m in CNN_MODELS if m in models):
        for kind in ("static", "dynamic"):
            ours, peer = best(model, True, kind, "change_points"), best(model, False, kind, "change_points")
            # a drop is a loss of accuracy: a row that gained has dropped 0 points, not a negative number
            met = None if ours is None or peer is None else max(0.0, -ours) <= max(0.0, -peer)
            found.append({"goal": f"{model}: our {kind} INT8 accuracy drop ≤ the best peer's (accuracy change "
                                  "in points; a gain counts as no drop)", "ours": ours, "peer": peer, "met": met})
    if "minilm" in models:
        int8 = [r for r in ok if r["model"] == "minilm" and r["source"] == "edgecompress" and r["bits"] == "int8"]
        top = max(int8, key=lambda r: r["cosine_mean"], default=None)
        peer = max((r["cosine_mean"] for r in ok if r["model"] == "minilm" and r["bits"] == "int8"
                    and r["source"] != "edgecompress"), default=None)
        found.append({"goal": "minilm: our INT8 mean cosine to float32 ≥ 0.995", "target": 0.995, "peer": peer,
                      "variant": top and top["variant"], "ours": top and top["cosine_mean"],
                      "met": None if top is None else top["cosine_mean"] >= 0.995})
        for kind in ("static", "dynamic"):
            # MiniLM's accuracy is its retrieval task (recall@1 change in points); cosine is fidelity
            ours, peer = best("minilm", True, kind, "change_points"), best("minilm", False, kind, "change_points")
            found.append({"goal": f"minilm: our {kind} INT8 retrieval accuracy drop ≤ the best peer's (recall@1 "
                                  "change in points; a gain counts as no drop)", "ours": ours, "peer": peer,
                          "met": None if ours is None or peer is None else max(0.0, -ours) <= max(0.0, -peer)})
            ours_cos, peer_cos = best("minilm", True, kind, "cosine_mean"), best("minilm", False, kind, "cosine_mean")
            found.append({"goal": f"minilm (fidelity, beyond the issue's goals): our {kind} INT8 mean cosine ≥ the "
                                  "best peer's", "ours": ours_cos, "peer": peer_cos,
                          "met": None if ours_cos is None or peer_cos is None else ours_cos >= peer_cos})
        found.append({"goal": "minilm: that INT8 model's recall@1 within 1 point of float32", "target": 1.0,
                      "variant": top and top["variant"], "ours": top and top["change_points"],
                      "met": None if top is None else abs(top["change_points"]) <= 1.0})
        ratios = [r["size_vs_fp32_onnx"] for r in ok if r["model"] == "minilm" and r["source"] == "edgecompress"
                  and r["bits"] == "int4"]
        ratio = min(ratios, default=None)
        found.append({"goal": "minilm: our INT4 artifact ≤ 0.2 × the float32 file", "target": 0.2, "ours": ratio,
                      "met": None if ratio is None else ratio <= 0.2})
    return found


# -------------------------------------------------------------------------------------------------- printing
def _fmt(value, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def _size(n: int | None) -> str:
    if n is None:
        return "–"
    return f"{n / 1e6:.2f} MB" if n >= 1e6 else f"{n / 1e3:.1f} KB"


def print_tables(console: Console, rows: list[dict]) -> None:
    for model in dict.fromkeys(r["model"] for r in rows):
        group = [r for r in rows if r["model"] == model]
        is_text = model == "minilm"
        quality = ["cos mean", "cos min", "R@1", "ΔR@1 pts", "MRR"] if is_text else ["acc", "Δacc pts", "top1 agr"]
        table = Table(title=f"{model}: quantization, measured on the runtime artifact (1 thread)")
        for col in ("variant", "source", "bits", "kind", "status", *quality, "size", "×fp32", "p50 b1 ms", "quantize s",
                    "runtime"):
            table.add_column(col)
        for r in group:
            if r["status"] != "ok":
                table.add_row(r["variant"], r["source"], r["bits"], r["kind"], r["status"], *["–"] * (len(quality) + 5))
                continue
            if is_text:
                q = [_fmt(r["cosine_mean"], ".4f"), _fmt(r["cosine_min"], ".4f"), _fmt(r["recall@1"], ".4f"),
                     _fmt(r["change_points"], "+.2f"), _fmt(r["mrr"], ".4f")]
            else:
                q = [_fmt(r["accuracy"], ".4f"), _fmt(r["change_points"], "+.2f"), _fmt(r["top1_agreement"], ".4f")]
            table.add_row(r["variant"], r["source"], r["bits"], r["kind"], "ok", *q, _size(r["size_bytes"]),
                          _fmt(r["size_vs_fp32_onnx"], ".3f"), _fmt(r["latency_b1_p50_ms"], ".3f"),
                          _fmt(r["quantize_seconds"], ".2f"), r["runtime"])
        console.print(table)
        for r in group:
            if r["status"] != "ok" or r.get("detail"):
                console.print(f"  [{r['status']}] {r['variant']}: {r['detail']}", markup=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer calibration and evaluation samples")
    parser.add_argument("--models", nargs="+", default=list(ALL_MODELS), choices=ALL_MODELS)
    parser.add_argument("--variants", nargs="+", default=None, help="run only variants whose name contains one")
    parser.add_argument("--threads", type=int, default=1, help="runtime threads for evaluation (latency: 1)")
    # Dynamic quantization shares one activation scale across a batch, so its accuracy depends on the batch it
    # is evaluated in; batch 1 is how an edge device runs it (static schemes give the same result either way).
    parser.add_argument("--eval-batch", type=int, default=1, help="batch size of the accuracy/fidelity runs")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "quantization.json")
    parser.add_argument("--keep", action="store_true",
                        help="keep the rows of the existing --out file that this run does not redo")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the sentence encoder comes from a package, never a hub
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
    console = Console(width=200)  # a readable table in logs and CI, not only in a terminal
    timing = dict(warmup=3, iters=20, max_seconds=3.0) if args.quick else dict(warmup=10, iters=100, max_seconds=10.0)
    selected = [v for v in variants(args.quick)
                if args.variants is None or any(s.lower() in v.name.lower() for s in args.variants)]
    rows = []
    with tempfile.TemporaryDirectory(prefix="qbench-models-") as workdir:
        for name in args.models:
            started = time.perf_counter()
            case = minilm_case(args.quick, Path(workdir)) if name == "minilm" else cnn_case(name, args.quick,
                                                                                           Path(workdir))
            console.print(f"{name}: loaded in {time.perf_counter() - started:.1f} s")
            for variant in (v for v in selected if name in v.models):
                started = time.perf_counter()
                rows.append(measure(case, variant, args, timing))
                console.print(f"  {variant.name}: {rows[-1]['status']} ({time.perf_counter() - started:.1f} s)")
    if args.keep and args.out.is_file():
        redone = {(r["model"], r["variant"]) for r in rows}
        kept = [r for r in json.loads(args.out.read_text())["rows"] if (r["model"], r["variant"]) not in redone]
        order = {(m, v.name): i for i, (m, v) in enumerate((m, v) for m in ALL_MODELS for v in variants(args.quick))}
        rows = sorted(kept + rows, key=lambda r: order.get((r["model"], r["variant"]), len(order)))
    add_relative(rows)
    print_tables(console, rows)
    found = goals(rows)
    for g in found:
        verdict = {True: "met", False: "NOT met", None: "not measured"}[g["met"]]
        console.print(f"goal: {g['goal']}: {verdict} (ours {_fmt(g['ours'], '.4f')})", markup=False)
    console.print(f"CPU: {cpu_summary()}")
    settings = {"quick": args.quick, "threads": args.threads, "eval_batch": args.eval_batch, "latency": timing,
                "calibration_samples": {"cnn": 100 if args.quick else 500, "minilm": 32 if args.quick else 128},
                "minilm_pairs": 64 if args.quick else 300, "minilm_seq_len": 128}
    write_json_atomic(args.out, {"environment": environment(), "settings": settings, "rows": rows, "goals": found})
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
