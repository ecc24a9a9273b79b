"""The quantized representation: activation quantization points and integer-weight layers.

Both compute with the custom ops in ``ops.py`` once converted, so PyTorch simulation and every exported
artifact share one set of integers, scales and zero points.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UnsupportedError
from . import ops
from .observers import Observer
from .qparams import INT8_WEIGHT, INT8_WEIGHT_REDUCED, INT32_BIAS, IntFormat, affine_qparams, symmetric_qparams


class ActivationQuantizer(nn.Module):
    """A per-tensor quantization point. While ``observer`` is set it only records statistics; ``freeze``
    turns the statistics into a scale and zero point and from then on it fake-quantizes."""

    def __init__(self, fmt: IntFormat, observer: Observer) -> None:
        super().__init__()
        self.dtype_name = fmt.name
        self.quant_min, self.quant_max = fmt.qmin, fmt.qmax
        self.observer: Observer | None = observer
        self._fmt = fmt
        self.register_buffer("scale", torch.tensor(1.0))
        self.register_buffer("zero_point", torch.tensor(0, dtype=fmt.dtype))

    @property
    def frozen(self) -> bool:
        return self.observer is None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.observer is not None:
            return self.observer(x)
        return ops.fake_quantize(x, self.scale, self.zero_point, self.quant_min, self.quant_max)

    def freeze(self) -> None:
        if self.observer is None:
            return
        lo, hi = self.observer.range()
        scale, zero_point = affine_qparams(lo, hi, self._fmt)
        self.scale.copy_(scale.reshape(()))
        self.zero_point.copy_(zero_point.reshape(()))
        self.observer = None

    def extra_repr(self) -> str:
        if self.observer is not None:
            return f"{self.dtype_name}, observing"
        state = f"scale={self.scale.item():.3g}, zp={self.zero_point.item()}"
        return f"{self.dtype_name}, {state}"


class QuantizedLayer(nn.Module):
    """Conv1d / Conv2d / Linear with int8 weights (symmetric, per output channel or per tensor) and an
    int32 bias whose scale is input_scale × weight_scale, the form integer kernels (QLinearConv, QGemm,
    TFLite int8 ops) compute with. Until ``convert`` it runs the float weights so that calibration sees
    the float model's activations."""

    def __init__(self, layer: nn.Conv1d | nn.Conv2d | nn.Linear, *, per_channel: bool = True,
                 reduce_range: bool = False) -> None:
        super().__init__()
        if isinstance(layer, nn.Linear):
            self.kind = "linear"
        elif isinstance(layer, (nn.Conv1d, nn.Conv2d)):
            if layer.padding_mode != "zeros":
                raise UnsupportedError(f"conv padding_mode {layer.padding_mode!r} cannot be quantized; only 'zeros'")
            self.kind = "conv1d" if isinstance(layer, nn.Conv1d) else "conv2d"
            self.stride, self.padding = layer.stride, layer.padding
            self.dilation, self.groups = layer.dilation, layer.groups
        else:
            raise UnsupportedError(f"cannot quantize a {type(layer).__name__}; allowed: Conv1d, Conv2d, Linear")
        self.per_channel = per_channel
        fmt = INT8_WEIGHT_REDUCED if reduce_range else INT8_WEIGHT
        self.weight_bits = 7 if reduce_range else 8  # stored as int8 either way
        self.input_quantizer: str | None = None  # name of the ActivationQuantizer feeding this layer
        weight = layer.weight.detach().clone().float()
        self.register_buffer("weight_float", weight)
        self.register_buffer("bias_float", None if layer.bias is None else layer.bias.detach().clone().float())
        channels = weight.shape[0]
        absmax = weight.abs().reshape(channels, -1).amax(dim=1)
        if not per_channel:
            absmax = absmax.max().expand(channels).clone()  # one scale, stored per channel for one DQ form
        scale, zero_point = symmetric_qparams(absmax, fmt)
        self.register_buffer("weight_scale", scale)
        self.register_buffer("weight_zero_point", zero_point)
        self.register_buffer("weight_int", ops.quantize_per_channel(
            weight, scale, zero_point, 0, fmt.qmin, fmt.qmax, fmt.dtype))
        self.register_buffer("bias_int", None)
        self.register_buffer("bias_scale", None)
        self.register_buffer("bias_zero_point", None)
        self.converted = False

    @property
    def out_channels(self) -> int:
        return int(self.weight_int.shape[0])

    def convert(self, input_scale: torch.Tensor) -> None:
        """Quantize the bias with the input's scale and drop the float weights."""
        if self.bias_float is not None:
            bias_scale = (input_scale.float() * self.weight_scale).clamp(min=1e-12)
            zp = torch.zeros(self.out_channels, dtype=INT32_BIAS.dtype)
            self.bias_scale = bias_scale
            self.bias_zero_point = zp
            self.bias_int = ops.quantize_per_channel(
                self.bias_float, bias_scale, zp, 0, INT32_BIAS.qmin, INT32_BIAS.qmax, INT32_BIAS.dtype)
        self.weight_float = None
        self.bias_float = None
        self.converted = True

    def dequantized_weight(self) -> torch.Tensor:
        return ops.dequantize(self.weight_int, self.weight_scale, self.weight_zero_point, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.converted:
            weight = self.dequantized_weight()
            bias = (None if self.bias_int is None
                    else ops.dequantize(self.bias_int, self.bias_scale, self.bias_zero_point, 0))
        else:
            weight, bias = self.weight_float, self.bias_float
        if self.kind == "linear":
            return F.linear(x, weight, bias)
        conv = F.conv1d if self.kind == "conv1d" else F.conv2d
        return conv(x, weight, bias, self.stride, self.padding, self.dilation, self.groups)

    def extra_repr(self) -> str:
        shape = tuple(self.weight_int.shape)
        return (f"{self.kind}, weight int{self.weight_bits} {shape}, per_channel={self.per_channel}, "
                f"converted={self.converted}")
