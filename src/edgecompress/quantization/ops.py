"""The two primitive operations of our quantized representation, registered as torch custom ops.

Simulation in PyTorch calls exactly these ops, and every exporter lowers exactly these ops (ONNX:
QuantizeLinear/DequantizeLinear), so the scales, zero points and integers our algorithms compute are the
ones that land in the artifact; no exporter re-quantizes.
"""

from __future__ import annotations

import torch

NAMESPACE = "edgecompress"


def _broadcast_shape(tensor: torch.Tensor, axis: int) -> list[int]:
    shape = [1] * tensor.dim()
    shape[axis] = -1
    return shape


@torch.library.custom_op(f"{NAMESPACE}::fake_quantize", mutates_args=())
def fake_quantize(
    x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, quant_min: int, quant_max: int
) -> torch.Tensor:
    """Per-tensor quantize then dequantize, rounding half to even like ONNX QuantizeLinear."""
    zp = zero_point.to(torch.float32)
    q = torch.clamp(torch.round(x / scale) + zp, quant_min, quant_max)
    return (q - zp) * scale


@fake_quantize.register_fake
def _(x, scale, zero_point, quant_min, quant_max):
    return torch.empty_like(x)


@torch.library.custom_op(f"{NAMESPACE}::dequantize", mutates_args=())
def dequantize(q: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, axis: int) -> torch.Tensor:
    """Integer tensor → float32 with per-channel (``axis``) scale and zero point."""
    shape = _broadcast_shape(q, axis)
    return (q.to(torch.float32) - zero_point.to(torch.float32).reshape(shape)) * scale.reshape(shape)


@dequantize.register_fake
def _(q, scale, zero_point, axis):
    return torch.empty(q.shape, dtype=torch.float32, device=q.device)


def quantize_per_channel(
    w: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, axis: int, quant_min: int, quant_max: int,
    dtype: torch.dtype,
) -> torch.Tensor:
    """Float → integers with round-half-to-even (the rounding QuantizeLinear uses)."""
    shape = _broadcast_shape(w, axis)
    q = torch.round(w / scale.reshape(shape)) + zero_point.to(torch.float32).reshape(shape)
    return torch.clamp(q, quant_min, quant_max).to(dtype)


@torch.library.custom_op(f"{NAMESPACE}::dequantize_weight", mutates_args=())
def dequantize_weight(q: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, block_size: int,
                      quant_min: int, quant_max: int) -> torch.Tensor:
    """Low-bit or group-wise weights → float32. ``block_size`` 0: per channel along axis 0, ``q`` of any rank;
    otherwise ``q`` is [out, K] and each run of ``block_size`` elements of a row (the last may be shorter)
    shares scale[:, j] and zero_point[:, j]. ``quant_min``/``quant_max`` declare the integer range, which the
    exporter uses to pick the storage type (int2/int4/int8)."""
    if block_size == 0:
        return dequantize(q, scale, zero_point, 0)
    k = q.shape[1]
    s = scale.repeat_interleave(block_size, dim=1)[:, :k]
    z = zero_point.to(torch.float32).repeat_interleave(block_size, dim=1)[:, :k]
    return (q.to(torch.float32) - z) * s


@dequantize_weight.register_fake
def _(q, scale, zero_point, block_size, quant_min, quant_max):
    return torch.empty(q.shape, dtype=torch.float32, device=q.device)
