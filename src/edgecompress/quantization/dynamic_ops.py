"""The run-time (dynamic) quantization primitives, registered as torch custom ops.

``dynamic_quantize`` is ONNX DynamicQuantizeLinear and ``matmul_integer`` is ONNX MatMulInteger, computed
here exactly as ONNX Runtime computes them, so the simulation and the exported graph see the same integers
(export/onnx_dynamic.py lowers each op to its ONNX namesake).
"""

from __future__ import annotations

import torch

from .ops import NAMESPACE

_QMAX = 255.0  # DynamicQuantizeLinear always produces uint8


@torch.library.custom_op(f"{NAMESPACE}::dynamic_quantize", mutates_args=())
def dynamic_quantize(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-tensor uint8 quantization with parameters taken from ``x`` itself: the range [min, max] is widened
    to include 0, scale = (max - min) / 255, zero point = round(-min / scale) saturated to [0, 255], and
    q = saturate(round(x / scale) + zero point), rounding half to even. An all-zero tensor gets scale 1
    (ONNX leaves it undefined; ONNX Runtime returns 1). Returns (q uint8, scale float32 [], zero point uint8 [])."""
    x = x.float()
    lo = torch.clamp(x.min(), max=0.0)
    hi = torch.clamp(x.max(), min=0.0)
    scale = (hi - lo) / _QMAX
    scale = torch.where(scale == 0, torch.ones_like(scale), scale)
    zero_point = torch.clamp(torch.round(-lo / scale), 0.0, _QMAX)
    q = torch.clamp(torch.round(x / scale) + zero_point, 0.0, _QMAX)
    return q.to(torch.uint8), scale, zero_point.to(torch.uint8)


@dynamic_quantize.register_fake
def _(x):
    return (torch.empty(x.shape, dtype=torch.uint8, device=x.device),
            torch.empty((), dtype=torch.float32, device=x.device),
            torch.empty((), dtype=torch.uint8, device=x.device))


@torch.library.custom_op(f"{NAMESPACE}::matmul_integer", mutates_args=())
def matmul_integer(a: torch.Tensor, a_zero_point: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(a - a_zero_point) @ b in exact int32 arithmetic: ``a`` uint8 (..., K) with a per-tensor zero point,
    ``b`` int8 (K, N) with zero point 0 (symmetric weights)."""
    return torch.matmul(a.to(torch.int32) - a_zero_point.to(torch.int32), b.to(torch.int32))


@matmul_integer.register_fake
def _(a, a_zero_point, b):
    return torch.empty((*a.shape[:-1], b.shape[-1]), dtype=torch.int32, device=a.device)
