"""TFLite export through litert-torch (PyTorch → .tflite, no TensorFlow), run in the LiteRT interpreter.

Schemes
- fp32: the float model.
- fp16: TFLite's float16 mode: conv / depthwise conv / fully-connected weights stored in float16 and
  dequantized to float32 when the model loads; arithmetic stays float32 (ai-edge-quantizer's float casting).
  Takes a float model or a HalfPrecision one (whose float16 weights are stored as they are); biases and
  other constants stay float32.
- int8: full-integer, from edgecompress's quantized representation only (``edgecompress.quantize``). The
  graph is rewritten into the PT2E reference form (tflite_reference), which litert-torch's converter lowers
  to int8 kernels with our scales; the written file is then checked to hold our int8 weights, per-channel
  scales and int32 biases bit for bit (``check_carried``), so the artifact is never re-quantized. The
  interface is float by default (QUANTIZE / DEQUANTIZE at the boundary, with our input and output scales);
  ``TfliteExporter(integer_io=True)`` drops those two ops so that callers exchange int8 tensors, as
  microcontrollers want.

Shapes are static in TFLite (litert-torch cannot export a dynamic batch of these models): the artifact is
written for batch 1. The runner serves any batch: it resizes the input and re-allocates when every op of the
model accepts that (e.g. an MLP), and otherwise runs the samples one by one (a RESHAPE/flatten with a
constant batch of 1 refuses a resize).
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import ExportError, MissingDependencyError, UnsupportedError
from ..fileio import atomic_path
from ..quantization.fp16 import HalfPrecision
from ..quantization.modules import QuantizedLayer
from . import tflite_flatbuffer as fb
from .base import Artifact, Exporter, Runner
from .tflite_reference import quantization_modules, reference_form

METADATA_NAME = "edgecompress"
_INSTALL = "pip install edgecompress[tflite]"
# Float casting of the weights of the ops TFLite's float16 mode covers (ai-edge-quantizer recipe format).
_FP16_RECIPE = [{
    "regex": ".*", "operation": "*", "algorithm_key": "float_casting",
    "op_config": {"weight_tensor_config": {"num_bits": 16, "dtype": "FLOAT"}, "compute_precision": "FLOAT",
                  "explicit_dequantize": True},
}]


# Loggers that warn at import about CUDA kernels and torch API changes that this CPU-only use never meets.
_NOISY_IMPORT_LOGGERS = ("torchao", "torch.utils._pytree")


def _require(*modules: str) -> None:
    import importlib
    import logging

    loggers = [logging.getLogger(name) for name in _NOISY_IMPORT_LOGGERS]
    levels = [logger.level for logger in loggers]
    for name in modules:
        try:
            for logger in loggers:
                logger.setLevel(logging.ERROR)
            importlib.import_module(name)
        except ImportError:
            raise MissingDependencyError(
                f"TFLite export and the LiteRT runtime need the 'tflite' extra ({name} is not installed): "
                f"{_INSTALL}") from None
        finally:
            for logger, level in zip(loggers, levels, strict=True):
                logger.setLevel(level)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """litert-torch prints a progress line per conversion step (switched by an environment variable it reads
    on each step) and torch API deprecation warnings from its internals; ai-edge-quantizer prints a report.
    Keep all of it off our console."""
    previous = os.environ.get("LITERT_TORCH_SHOW_PROGRESS")
    os.environ["LITERT_TORCH_SHOW_PROGRESS"] = "n"
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            yield
    finally:
        if previous is None:
            os.environ.pop("LITERT_TORCH_SHOW_PROGRESS", None)
        else:
            os.environ["LITERT_TORCH_SHOW_PROGRESS"] = previous


@contextlib.contextmanager
def _strict_qdq() -> Iterator[None]:
    """Strict QDQ mode: the converter lowers exactly the quantize/dequantize pairs in the graph and nothing
    else. Without it, a layer left float on purpose (``QuantConfig.ignore``) between two quantized tensors gets
    int8 weights with scales of the converter's choosing. litert-torch 0.10 builds its converter config inside
    the conversion without exposing this switch, so the config's constructor is wrapped for one conversion."""
    from litert_converter.mlir._mlir_libs import converter_api_ext as api

    original = api.ConvertToTFLConfig
    if not hasattr(original(), "strict_qdq_mode"):
        raise ExportError("this litert-converter has no strict QDQ mode; int8 TFLite export needs litert-torch 0.10")

    def strict():
        config = original()
        config.strict_qdq_mode = True
        return config

    api.ConvertToTFLConfig = strict
    try:
        yield
    finally:
        api.ConvertToTFLConfig = original


def _static_quant_config():
    """litert-torch's switch for lowering quantize/dequantize pairs to int8 kernels ("STATIC" QDQ mode). It
    takes the form of a PT2E quantizer, which is never run: the scales come from our representation."""
    from litert_torch.quantize import pt2e_quantizer, quant_config

    quantizer = pt2e_quantizer.PT2EQuantizer().set_global(
        pt2e_quantizer.get_symmetric_quantization_config(is_per_channel=True, is_dynamic=False))
    return quant_config.QuantConfig(pt2e_quantizer=quantizer)


def _convert(module: nn.Module, sample: tuple[torch.Tensor, ...], *, int8: bool) -> bytes:
    import litert_torch

    try:
        with _quiet(), torch.no_grad(), (_strict_qdq() if int8 else contextlib.nullcontext()):
            edge = litert_torch.convert(module, sample, quant_config=_static_quant_config() if int8 else None)
            return bytes(edge.model_content())
    except Exception as e:  # the converter raises many types; report one
        raise ExportError(f"litert-torch could not convert {type(module).__name__}: {type(e).__name__}: {e}") from None


def _float16_weights(content: bytes) -> bytes:
    from ai_edge_quantizer import quantizer

    try:
        with _quiet():
            cast = quantizer.Quantizer(bytearray(content), _FP16_RECIPE)
            result = cast.quantize(enable_progress_bar=False, enable_progress_report=False)
    except Exception as e:
        raise ExportError(f"ai-edge-quantizer could not cast the weights to float16: {type(e).__name__}: {e}") from None
    return bytes(result.quantized_model)


def _per_channel_rows(data: np.ndarray, axis: int, channels: int) -> np.ndarray:
    """Each output channel's values, sorted: compares weights across layouts (OIHW vs OHWI vs 1HWO)."""
    return np.sort(np.moveaxis(data, axis, 0).reshape(channels, -1), axis=1)


def check_carried(model, quantized: nn.Module) -> None:
    """ExportError unless the flatbuffer ``model`` holds every QuantizedLayer's int8 weights with its per-channel
    scales, and its int32 bias, exactly: the converter must lower our integers, not compute its own."""
    consts = fb.constants(model)
    layers = [(name, m) for name, m in quantized.named_modules() if isinstance(m, QuantizedLayer)]
    weights = [c for c in consts if c.dtype == "int8" and c.scales.size]
    if len(weights) != len(layers):
        raise ExportError(f"the TFLite model has {len(weights)} int8 weight tensors for {len(layers)} quantized "
                          "layers: the converter quantized layers on its own; refusing the artifact")
    for name, layer in layers:
        channels = layer.out_channels
        scales = layer.weight_scale.float().numpy()
        want = np.sort(layer.weight_int.reshape(channels, -1).numpy(), axis=1)
        found = [c for c in weights if c.scales.shape == (channels,)
                 and np.array_equal(c.scales, scales) and not c.zero_points.any() and c.data.size == want.size
                 and np.array_equal(_per_channel_rows(c.data, c.axis, channels), want)]
        if not found:
            raise ExportError(f"the TFLite model does not hold layer {name!r}'s int8 weights and scales as "
                              "edgecompress computed them; refusing an artifact that re-quantized them")
        if layer.bias_int is None:
            continue
        bias, bias_scale = layer.bias_int.numpy(), layer.bias_scale.numpy()
        # The converter computes the bias scale (input scale × weight scale) itself: equal up to float rounding.
        if not [c for c in consts if c.dtype == "int32" and c.data.shape == bias.shape and np.array_equal(c.data, bias)
                and c.scales.shape == bias.shape and np.allclose(c.scales, bias_scale, rtol=1e-6, atol=0)]:
            raise ExportError(f"the TFLite model does not hold layer {name!r}'s int32 bias as edgecompress "
                              "computed it; refusing an artifact that re-quantized it")


def _float_module(model: nn.Module, scheme: str) -> nn.Module:
    """The float32 module to convert for fp32 / fp16. A HalfPrecision model (FP16 conversion, Q3) converts as its
    float16-rounded weights in float32: TFLite's fp16 mode stores those same weights in half again."""
    if scheme == "fp16" and isinstance(model, HalfPrecision):
        model = copy.deepcopy(model.model).float()
    quantized = quantization_modules(model)
    if quantized:
        raise UnsupportedError(f"scheme {scheme!r} needs a float model; this one holds {', '.join(quantized[:3])}"
                               f"{' …' if len(quantized) > 3 else ''} (export static int8 models with scheme 'int8')")
    return model.eval()


def read_metadata(path: Path) -> dict[str, str]:
    """The metadata an edgecompress .tflite carries (``{}`` for other files)."""
    _require("ai_edge_litert")
    data = fb.get_metadata(fb.read(Path(path).read_bytes()), METADATA_NAME)
    return json.loads(data.decode()) if data else {}


class TfliteExporter(Exporter):
    name = "tflite"
    suffix = ".tflite"
    runtime = "litert"
    schemes = frozenset({"fp32", "fp16", "int8"})

    def __init__(self, *, integer_io: bool = False) -> None:
        self.integer_io = integer_io  # int8 schemes only: int8 input/output tensors instead of float

    def export(self, model: nn.Module, example_inputs: tuple[torch.Tensor, ...], path: Path, *,
               scheme: str, metadata: dict[str, str] | None = None) -> Artifact:
        if scheme not in self.schemes:
            raise UnsupportedError(f"TFLite export cannot carry {scheme!r}; allowed: {', '.join(sorted(self.schemes))}")
        module = reference_form(model) if scheme == "int8" else _float_module(model, scheme)
        _require("litert_torch", "ai_edge_litert", "ai_edge_quantizer")
        sample = tuple(t[:1] for t in example_inputs)  # TFLite shapes are static: batch 1
        content = _convert(module, sample, int8=scheme == "int8")
        if scheme == "fp16":
            content = _float16_weights(content)
        flat = fb.read(content)
        if scheme == "int8":
            check_carried(flat, model)
            if self.integer_io:
                floats = fb.integer_interface(flat)
                if floats:
                    raise UnsupportedError(f"integer_io was asked for, but {', '.join(floats)} stay float: the "
                                           "model's first or last op is not quantized (see QuantConfig.ignore)")
        info = {"edgecompress.format": "tflite", "edgecompress.scheme": scheme, "edgecompress.batch_size": "1",
                "edgecompress.interface": "int8" if scheme == "int8" and self.integer_io else "float32"}
        if scheme == "int8":
            info["edgecompress.quantization"] = "edgecompress integers and scales, lowered (not re-quantized)"
        info.update(metadata or {})
        fb.set_metadata(flat, METADATA_NAME, json.dumps(info, sort_keys=True).encode())
        content = fb.write(flat)
        self._check(content)
        with atomic_path(path) as tmp:
            tmp.write_bytes(content)
        return Artifact(self.name, Path(path), self.runtime, scheme, (Path(path),))

    @staticmethod
    def _check(content: bytes) -> None:
        from ai_edge_litert.interpreter import Interpreter

        try:
            Interpreter(model_content=content, num_threads=1).allocate_tensors()
        except Exception as e:
            raise ExportError(f"the LiteRT interpreter cannot load the converted model: {e}") from None

    def runner(self, path: Path, *, threads: int | None = None) -> Runner:
        _require("ai_edge_litert")
        return _LiteRtRunner(Path(path), threads or (os.cpu_count() or 1))


class _LiteRtRunner:
    """numpy float batch → numpy float batch in the LiteRT interpreter, whatever the batch size and whether
    the model's interface is float or int8 (then inputs are quantized and outputs dequantized here with the
    tensors' own scales)."""

    def __init__(self, path: Path, threads: int) -> None:
        self.path, self.threads = path, threads
        self.interpreter = self._load()
        self.base_shape = tuple(int(d) for d in self.interpreter.get_input_details()[0]["shape"])
        self.resizable: bool | None = None  # learnt on the first batch of another size

    def _load(self):
        from ai_edge_litert.interpreter import Interpreter

        try:
            interpreter = Interpreter(model_path=str(self.path), num_threads=self.threads)
            interpreter.allocate_tensors()
        except Exception as e:
            raise ExportError(f"the LiteRT interpreter cannot load {self.path}: {e}") from None
        return interpreter

    def _resize(self, shape: tuple[int, ...]) -> None:
        current = tuple(int(d) for d in self.interpreter.get_input_details()[0]["shape"])
        if current != shape:
            self.interpreter.resize_tensor_input(self.interpreter.get_input_details()[0]["index"], list(shape))
            self.interpreter.allocate_tensors()

    def _invoke(self, x: np.ndarray) -> np.ndarray:
        interpreter = self.interpreter
        source, target = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
        if source["dtype"] == np.int8:
            scale, zero_point = source["quantization"]
            x = np.clip(np.round(x / scale) + zero_point, -128, 127).astype(np.int8)
        interpreter.set_tensor(source["index"], x)
        interpreter.invoke()
        out = interpreter.get_tensor(target["index"])
        if target["dtype"] == np.int8:
            scale, zero_point = target["quantization"]
            return (out.astype(np.float32) - zero_point) * np.float32(scale)
        return out.copy()

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.shape[1:] != self.base_shape[1:]:
            raise ExportError(f"input of shape {tuple(x.shape)} does not fit the model's {self.base_shape}")
        if self.resizable is not False:
            try:
                self._resize(tuple(x.shape))
                out = self._invoke(x)
                if x.shape[0] != self.base_shape[0]:
                    self.resizable = True
                return out
            except (RuntimeError, ValueError):
                if x.shape[0] == self.base_shape[0]:
                    raise
                self.resizable = False  # some op has the batch of 1 baked in; a fresh interpreter at batch 1
                self.interpreter = self._load()
        self._resize(self.base_shape)
        step = self.base_shape[0]
        return np.concatenate([self._invoke(x[i:i + step]) for i in range(0, x.shape[0], step)])
