"""The quantized representation: activation quantization points and integer-weight layers.

Both compute with the custom ops in ``ops.py`` once converted, so PyTorch simulation and every exported
artifact share one set of integers, scales and zero points.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import DataError, UnsupportedError
from . import ops
from .lowbit import fit_qparams, quantize_weight
from .observers import Observer
from .qparams import INT32_BIAS, IntFormat, affine_qparams, weight_format


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
    """Conv1d / Conv2d / Linear with integer weights of ``bits`` bits (see qparams.weight_format): symmetric
    or asymmetric, per output channel, per tensor, or per group of ``group_size`` consecutive input elements.

    Static (default): the input is quantized by an ActivationQuantizer and, with per-channel or per-tensor
    scales, the bias is int32 with scale input_scale × weight_scale, the form integer kernels (QLinearConv,
    QGemm, TFLite int8 ops) compute with. Group-wise scales have no single per-channel bias scale, so such
    layers keep a float bias. ``weight_only``: the input stays float and so does the bias (the INT4
    weight-only scheme of torchao / GPTQ; runtimes compute on dequantized weights or, in ONNX Runtime,
    MatMulNBits). Until ``convert`` the layer runs its float weights so that calibration sees the float
    model's activations."""

    def __init__(self, layer: nn.Conv1d | nn.Conv2d | nn.Linear, *, per_channel: bool = True,
                 reduce_range: bool = False, bits: int = 8, group_size: int | None = None, symmetric: bool = True,
                 weight_only: bool = False, ternary: bool = False) -> None:
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
        weight = layer.weight.detach().clone().float()
        if group_size is not None:
            if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1:
                raise UnsupportedError(f"group_size must be a positive integer or None, got {group_size!r}")
            if not per_channel:
                raise UnsupportedError(f"group_size={group_size} gives one scale per group of inputs; "
                                       "per_channel=False asks for one scale per tensor: choose one")
        fmt = weight_format(bits, symmetric, reduce_range, ternary=ternary)
        self.weight_format = fmt
        self.bits, self.group_size, self.symmetric = bits, group_size, symmetric
        self.per_channel, self.weight_only = per_channel, weight_only
        self.weight_bits = fmt.bits  # 7 for reduced-range 8-bit; stored in an int8 tensor either way
        self.input_quantizer: str | None = None  # name of the ActivationQuantizer feeding a static layer
        self.register_buffer("weight_float", weight)
        self.register_buffer("bias_float", None if layer.bias is None else layer.bias.detach().clone().float())
        scale, zero_point = fit_qparams(weight, fmt, symmetric=symmetric, per_channel=per_channel,
                                        group_size=group_size, search=bits < 8)
        self.register_buffer("weight_scale", scale)
        self.register_buffer("weight_zero_point", zero_point)
        self.register_buffer("weight_int", quantize_weight(weight, scale, zero_point, fmt, group_size))
        self.register_buffer("bias_int", None)
        self.register_buffer("bias_scale", None)
        self.register_buffer("bias_zero_point", None)
        self.converted = False

    @property
    def out_channels(self) -> int:
        return int(self.weight_int.shape[0])

    @property
    def integer_bias(self) -> bool:
        """Whether ``convert`` quantizes the bias to int32 (static layers with one weight scale per channel)."""
        return not self.weight_only and self.group_size is None

    def assign_weights(self, weight_int: torch.Tensor, weight_scale: torch.Tensor,
                       weight_zero_point: torch.Tensor | None = None) -> None:
        """Replace the integer weights and their scales (AdaRound, QAT conversion), checked against this
        layer's format. ``weight_zero_point`` None means 0 (symmetric layers only)."""
        fmt = self.weight_format
        if self.converted and self.integer_bias and self.bias_int is not None:
            raise UnsupportedError("assign_weights after convert: the int32 bias was already quantized with the old "
                                   "weight scale; assign the weights before convert")
        _check_tensor("weight_int", weight_int, self.weight_int.shape, fmt.dtype)
        _check_tensor("weight_scale", weight_scale, self.weight_scale.shape, None)
        if not torch.isfinite(weight_scale).all() or (weight_scale <= 0).any():
            raise DataError("weight_scale must be finite and positive everywhere")
        lo, hi = int(weight_int.min()), int(weight_int.max())
        if lo < fmt.qmin or hi > fmt.qmax:
            raise DataError(f"weight_int values span [{lo}, {hi}]; the layer's {fmt.name} format allows "
                            f"[{fmt.qmin}, {fmt.qmax}]")
        if fmt.nonzero and (weight_int == 0).any():
            raise DataError("binary weights must be -1 or +1; weight_int contains 0")
        if weight_zero_point is None:
            if not self.symmetric:
                raise DataError("this layer's weights are asymmetric: give weight_zero_point")
            weight_zero_point = torch.zeros_like(self.weight_zero_point)
        _check_tensor("weight_zero_point", weight_zero_point, self.weight_zero_point.shape, fmt.dtype)
        if self.symmetric and weight_zero_point.any():
            raise DataError("this layer's weights are symmetric: weight_zero_point must be all 0")
        if weight_zero_point.numel() and (int(weight_zero_point.min()) < fmt.qmin
                                          or int(weight_zero_point.max()) > fmt.qmax):
            raise DataError(f"weight_zero_point values must lie in [{fmt.qmin}, {fmt.qmax}]")
        self.weight_int = weight_int.detach().clone()
        self.weight_scale = weight_scale.detach().float().clone()
        self.weight_zero_point = weight_zero_point.detach().clone()

    def convert(self, input_scale: torch.Tensor | None) -> None:
        """Quantize the bias with the input's scale (static layers with per-channel scales) and drop the float
        weights. Weight-only and group-wise layers keep their float bias; ``input_scale`` may then be None."""
        if self.integer_bias and self.bias_float is not None:
            if input_scale is None:
                raise UnsupportedError("a static QuantizedLayer needs its input's scale to quantize the bias")
            bias_scale = (input_scale.float() * self.weight_scale).clamp(min=1e-12)
            zp = torch.zeros(self.out_channels, dtype=INT32_BIAS.dtype)
            self.bias_scale = bias_scale
            self.bias_zero_point = zp
            self.bias_int = ops.quantize_per_channel(
                self.bias_float, bias_scale, zp, 0, INT32_BIAS.qmin, INT32_BIAS.qmax, INT32_BIAS.dtype)
            self.bias_float = None
        self.weight_float = None
        self.converted = True

    def dequantized_weight(self) -> torch.Tensor:
        """The float weight the converted layer computes with (exactly what the exported graph dequantizes)."""
        fmt = self.weight_format
        if self.group_size is None and fmt.bits >= 7:  # int8 storage: the 8-bit scheme's op, unchanged
            return ops.dequantize(self.weight_int, self.weight_scale, self.weight_zero_point, 0)
        if self.group_size is None:
            return ops.dequantize_weight(self.weight_int, self.weight_scale, self.weight_zero_point, 0,
                                         fmt.qmin, fmt.qmax)
        q = self.weight_int.reshape(self.out_channels, -1)
        w = ops.dequantize_weight(q, self.weight_scale, self.weight_zero_point, self.group_size, fmt.qmin, fmt.qmax)
        return w.reshape(self.weight_int.shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.converted:
            weight = self.dequantized_weight()
            bias = (self.bias_float if self.bias_int is None
                    else ops.dequantize(self.bias_int, self.bias_scale, self.bias_zero_point, 0))
        else:
            weight, bias = self.weight_float, self.bias_float
        if self.kind == "linear":
            return F.linear(x, weight, bias)
        conv = F.conv1d if self.kind == "conv1d" else F.conv2d
        return conv(x, weight, bias, self.stride, self.padding, self.dilation, self.groups)

    def extra_repr(self) -> str:
        shape = tuple(self.weight_int.shape)
        scales = f"group_size={self.group_size}" if self.group_size else f"per_channel={self.per_channel}"
        mode = "weight_only" if self.weight_only else "static"
        sym = "symmetric" if self.symmetric else "asymmetric"
        return (f"{self.kind}, weight {self.weight_format.name} ({self.weight_bits} bits, {sym}) {shape}, "
                f"{scales}, {mode}, converted={self.converted}")


def _check_tensor(name: str, t: object, shape: torch.Size, dtype: torch.dtype | None) -> None:
    if not isinstance(t, torch.Tensor):
        raise DataError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.shape != shape:
        raise DataError(f"{name} has shape {tuple(t.shape)}; this layer needs {tuple(shape)}")
    if dtype is not None and t.dtype != dtype:
        raise DataError(f"{name} has dtype {t.dtype}; this layer needs {dtype}")
    if dtype is None and not t.dtype.is_floating_point:
        raise DataError(f"{name} has dtype {t.dtype}; this layer needs a floating-point tensor")
