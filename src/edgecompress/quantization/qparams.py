"""Integer ranges and the scale / zero-point arithmetic shared by every quantizer."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..errors import UnsupportedError

# Smallest scale we emit: keeps x / scale finite for all-zero channels.
MIN_SCALE = 1e-8


@dataclass(frozen=True)
class IntFormat:
    """An integer type as the runtimes see it. ``nonzero`` marks a format whose levels skip 0 (binary)."""

    name: str
    dtype: torch.dtype
    qmin: int
    qmax: int
    nonzero: bool = False

    @property
    def signed(self) -> bool:
        return self.qmin < 0

    @property
    def bits(self) -> int:
        """Bits of information per value (1 for binary, 2 for ternary, 7 for reduced-range int8)."""
        return max(1, math.ceil(math.log2(self.qmax - self.qmin + 1 - int(self.nonzero))))


UINT8 = IntFormat("uint8", torch.uint8, 0, 255)
INT8 = IntFormat("int8", torch.int8, -128, 127)
# Symmetric weights use [-127, 127] so that -scale·127 … scale·127 is symmetric (TFLite requires it).
INT8_WEIGHT = IntFormat("int8", torch.int8, -127, 127)
# 7-bit weights for x86 CPUs without VNNI: ONNX Runtime multiplies uint8 activations by int8 weights with
# vpmaddubsw, whose int16 sum of two products (255·127·2 > 32767) saturates; 255·63·2 does not.
INT8_WEIGHT_REDUCED = IntFormat("int8", torch.int8, -63, 63)
# Binary {-1, +1}·scale and ternary {-1, 0, +1}·scale, per channel or per group.
BINARY = IntFormat("binary", torch.int8, -1, 1, nonzero=True)
TERNARY = IntFormat("ternary", torch.int8, -1, 1)
INT32_BIAS = IntFormat("int32", torch.int32, -(2**31), 2**31 - 1)

ACTIVATION_FORMATS = {"uint8": UINT8, "int8": INT8}


WEIGHT_BITS = (1, 2, 3, 4, 5, 6, 7, 8)


def weight_format(bits: int, symmetric: bool = True, reduce_range: bool = False, *, ternary: bool = False
                  ) -> IntFormat:
    """The integer format of ``bits``-bit weights, held in int8 tensors whatever the width.

    - 8 bits, symmetric: [-127, 127] (TFLite needs a symmetric grid), [-63, 63] with ``reduce_range``;
    - 2–7 bits, symmetric: the full signed range, e.g. int4 [-8, 7] with zero point 0 (a narrow [-7, 7] would
      waste one of 16 levels; scales are fitted to minimise the error, so the extra level is used);
    - asymmetric (``symmetric=False``): the same signed range with a zero point per channel or group;
    - ``ternary``: {-1, 0, 1} (2 bits, symmetric); 1 bit: BINARY {-1, 1} (symmetric only).
    ``reduce_range`` only concerns 8 bits (below 8, products cannot saturate int16 pair sums)."""
    if bits not in WEIGHT_BITS:
        raise UnsupportedError(f"weight bits {bits!r} are not supported; allowed: {', '.join(map(str, WEIGHT_BITS))}")
    if ternary:
        if bits != 2 or not symmetric:
            raise UnsupportedError(f"ternary weights are 2-bit symmetric; got bits={bits}, symmetric={symmetric}")
        return TERNARY
    if bits == 1:
        if not symmetric:
            raise UnsupportedError("1-bit weights are binary {-1, +1}·scale and symmetric; asymmetric weights "
                                   "need bits >= 2")
        return BINARY
    if bits == 8:
        if symmetric:
            return INT8_WEIGHT_REDUCED if reduce_range else INT8_WEIGHT
        return IntFormat("int7", torch.int8, -64, 63) if reduce_range else INT8
    half = 1 << (bits - 1)
    return IntFormat(f"int{bits}", torch.int8, -half, half - 1)


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
