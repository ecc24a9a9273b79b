"""Integer ranges and the scale / zero-point arithmetic shared by every quantizer."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import UnsupportedError

# Smallest scale we emit: keeps x / scale finite for all-zero channels.
MIN_SCALE = 1e-8


@dataclass(frozen=True)
class IntFormat:
    """An integer type as the runtimes see it."""

    name: str
    dtype: torch.dtype
    qmin: int
    qmax: int

    @property
    def signed(self) -> bool:
        return self.qmin < 0


UINT8 = IntFormat("uint8", torch.uint8, 0, 255)
INT8 = IntFormat("int8", torch.int8, -128, 127)
# Symmetric weights use [-127, 127] so that -scale·127 … scale·127 is symmetric (TFLite requires it).
INT8_WEIGHT = IntFormat("int8", torch.int8, -127, 127)
# 7-bit weights for x86 CPUs without VNNI: ONNX Runtime multiplies uint8 activations by int8 weights with
# vpmaddubsw, whose int16 sum of two products (255·127·2 > 32767) saturates; 255·63·2 does not.
INT8_WEIGHT_REDUCED = IntFormat("int8", torch.int8, -63, 63)
INT32_BIAS = IntFormat("int32", torch.int32, -(2**31), 2**31 - 1)

ACTIVATION_FORMATS = {"uint8": UINT8, "int8": INT8}


def activation_format(name: str) -> IntFormat:
    if name not in ACTIVATION_FORMATS:
        raise UnsupportedError(f"activation dtype {name!r} is not supported; allowed: {sorted(ACTIVATION_FORMATS)}")
    return ACTIVATION_FORMATS[name]


def affine_qparams(lo: torch.Tensor, hi: torch.Tensor, fmt: IntFormat) -> tuple[torch.Tensor, torch.Tensor]:
    """Asymmetric scale and zero point for the range [lo, hi], widened to include 0 so that zero (padding,
    ReLU's floor) is represented exactly."""
    lo = torch.clamp(lo.float(), max=0.0)
    hi = torch.clamp(hi.float(), min=0.0)
    scale = torch.clamp((hi - lo) / (fmt.qmax - fmt.qmin), min=MIN_SCALE)
    zero_point = torch.clamp(torch.round(fmt.qmin - lo / scale), fmt.qmin, fmt.qmax)
    return scale, zero_point.to(fmt.dtype)


def symmetric_qparams(absmax: torch.Tensor, fmt: IntFormat) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric scale (zero point 0) covering [-absmax, absmax]."""
    scale = torch.clamp(absmax.float() / fmt.qmax, min=MIN_SCALE)
    return scale, torch.zeros_like(scale, dtype=fmt.dtype)
