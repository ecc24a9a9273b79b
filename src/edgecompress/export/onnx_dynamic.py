"""ONNX lowering of the dynamic-quantization ops (quantization/dynamic_ops.py) to their ONNX namesakes.

The exporter writes DynamicQuantizeLinear → MatMulInteger → Cast → Mul(x_scale · w_scale) [→ Add bias], the
pattern ONNX Runtime fuses into DynamicQuantizeMatMul at load. Weights are symmetric, so MatMulInteger's
b_zero_point is omitted (it defaults to 0) and per-channel scales are a plain per-column Mul.
"""

from __future__ import annotations


def dynamic_translations() -> dict:
    """{torch op overload: onnxscript function}, to merge into the ONNX exporter's translation table."""
    from onnxscript import opset21 as op

    from ..quantization import dynamic_ops  # registers torch.ops.edgecompress.dynamic_quantize / matmul_integer

    def dynamic_quantize(x):
        return op.DynamicQuantizeLinear(x)

    def matmul_integer(a, a_zero_point, b):
        return op.MatMulInteger(a, b, a_zero_point)

    return {dynamic_ops.dynamic_quantize._opoverload: dynamic_quantize,
            dynamic_ops.matmul_integer._opoverload: matmul_integer}
