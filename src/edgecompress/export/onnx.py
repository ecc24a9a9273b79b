"""ONNX export through torch.export (dynamo), lowering our quantization ops to QuantizeLinear /
DequantizeLinear with the integers and scales of the quantized representation."""

from __future__ import annotations

import contextlib
import inspect
import io
import logging
import os
import platform
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import ExportError
from ..fileio import atomic_path
from ..measure import environment
from .base import Artifact, Exporter, Runner, batch_of_two, for_scheme
from .onnx_compact import compact
from .onnx_dynamic import dynamic_translations
from .onnx_lowbit import storage_type

OPSET = 21  # int4 and blocked DequantizeLinear need opset 21; ONNX Runtime ≥ 1.20 runs it


def _translation_table() -> dict:
    import onnx
    from onnxscript import opset21 as op

    from ..quantization import ops  # registers torch.ops.edgecompress.*

    def fake_quantize(x, scale, zero_point, quant_min: int, quant_max: int):
        return op.DequantizeLinear(op.QuantizeLinear(x, scale, zero_point), scale, zero_point)

    def dequantize(q, scale, zero_point, axis: int):
        return op.DequantizeLinear(q, scale, zero_point, axis=axis)

    def dequantize_weight(q, scale, zero_point, block_size: int, quant_min: int, quant_max: int):
        # Cast to the narrowest ONNX integer type holding [quant_min, quant_max]; the exporter's constant
        # folding (or onnx_lowbit.pack_low_bit for large tensors) turns Cast(initializer) into a packed
        # INT4 / INT2 initializer. 3-bit weights travel in int4 containers, 5–7-bit ones in int8.
        to = storage_type(quant_min, quant_max)
        if to not in (onnx.TensorProto.INT8, onnx.TensorProto.UINT8):
            q, zero_point = op.Cast(q, to=to), op.Cast(zero_point, to=to)
        if block_size == 0:
            return op.DequantizeLinear(q, scale, zero_point, axis=0)
        return op.DequantizeLinear(q, scale, zero_point, axis=1, block_size=block_size)

    return {ops.fake_quantize._opoverload: fake_quantize, ops.dequantize._opoverload: dequantize,
            **dynamic_translations(),
            ops.dequantize_weight._opoverload: dequantize_weight}


def _batch_dynamic(model: nn.Module, example_inputs: tuple[torch.Tensor, ...]) -> tuple:
    """Dimension 0 of every input is the batch. A ``forward(*inputs)`` signature takes one entry holding
    them all (torch.export matches dynamic_shapes to parameters, not to values)."""
    batch = torch.export.Dim("batch")
    shapes = tuple({0: batch} for _ in example_inputs)
    parameters = inspect.signature(model.forward).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in parameters):
        return (shapes,)
    return shapes


@contextlib.contextmanager
def _quiet_registration():
    """The exporter logs a warning for every torchvision op it cannot register; we never use torchvision."""
    logger = logging.getLogger("torch.onnx._internal.exporter._registration")
    previous = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(previous)


def _strip_debug_info(proto):
    """Drop what the exporter adds for debugging (per-node stack traces and module paths, intermediate
    shape annotations, doc strings, the torch.export graph signature listing every buffer): on a small
    model it outweighs the weights, and runtimes ignore it."""
    graph = proto.graph
    del graph.value_info[:]
    del graph.metadata_props[:]
    for node in graph.node:
        del node.metadata_props[:]
        node.doc_string = ""
    graph.doc_string = ""
    for init in graph.initializer:
        del init.metadata_props[:]
    return proto


class OnnxExporter(Exporter):
    name = "onnx"
    suffix = ".onnx"
    runtime = "onnxruntime"
    # int8: static Q/DQ (fused into integer kernels); fp16: float16 graph with float32 inputs and outputs;
    # int4 … binary and mixed: low-bit weights stored packed, dequantized in the graph.
    schemes = frozenset({"fp32", "fp16", "int8", "int4", "int3", "int2", "ternary", "binary", "mixed"})

    def saturates_int8_weights(self) -> bool:
        # ONNX Runtime's x86 u8s8 kernels use vpmaddubsw unless VNNI is present; its int16 pair sums saturate
        # with full-range int8 weights (measured here: 14 dB simulation-vs-runtime SQNR on an MLP, exact with
        # 7-bit weights). ARM and VNNI kernels accumulate in int32.
        if platform.machine().lower() not in ("x86_64", "amd64", "i386", "i686"):
            return False
        flags = set(environment()["cpu_flags"] or [])
        return not flags & {"avx512_vnni", "avx_vnni", "amx_int8"}

    def export(self, model: nn.Module, example_inputs: tuple[torch.Tensor, ...], path: Path, *,
               scheme: str, metadata: dict[str, str] | None = None) -> Artifact:
        import onnx

        model = for_scheme(model.eval(), scheme)
        with tempfile.TemporaryDirectory() as tmp:
            raw = Path(tmp) / "model.onnx"
            log = io.StringIO()
            try:
                with contextlib.redirect_stdout(log), _quiet_registration(), torch.no_grad():
                    program = torch.onnx.export(
                        model, batch_of_two(example_inputs), dynamo=True, opset_version=OPSET,
                        external_data=False, input_names=["input"], output_names=["output"],
                        dynamic_shapes=_batch_dynamic(model, example_inputs),
                        custom_translation_table=_translation_table(), verbose=False)
                program.save(str(raw), external_data=False)
            except Exception as e:  # the exporter raises many types; report one
                raise ExportError(f"ONNX export of {type(model).__name__} failed: {type(e).__name__}: {e}\n"
                                  f"{log.getvalue()[-2000:]}") from None
            proto = compact(_strip_debug_info(onnx.load(str(raw))))
            try:
                onnx.checker.check_model(proto, full_check=True)
            except Exception as e:
                raise ExportError(f"the exported ONNX model fails onnx.checker: {e}") from None
            for key, value in (metadata or {}).items():
                entry = proto.metadata_props.add()
                entry.key, entry.value = key, value
            with atomic_path(path) as tmp_out:
                onnx.save(proto, str(tmp_out))
        return Artifact(self.name, Path(path), self.runtime, scheme, (Path(path),))

    def runner(self, path: Path, *, threads: int | None = None) -> Runner:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or (os.cpu_count() or 1)
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Low-bit Linear weights fuse into MatMulNBits, which by default (level 4) also quantizes the activations
        # to int8; level 1 computes in float32, as the weight-only representation does.
        options.add_session_config_entry("session.qdq_matmulnbits_accuracy_level", "1")
        try:
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as e:
            raise ExportError(f"ONNX Runtime cannot load {path}: {e}") from None
        input_name = session.get_inputs()[0].name

        def run(x: np.ndarray) -> np.ndarray:
            return session.run(None, {input_name: np.ascontiguousarray(x, dtype=np.float32)})[0]

        return run
