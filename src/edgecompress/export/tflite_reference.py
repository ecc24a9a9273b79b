"""Our quantized representation rewritten into the PT2E reference form that litert-torch lowers to TFLite int8
kernels, carrying our integers and scales.

litert-torch's converter recognises ``quantize → dequantize`` pairs of ``torch.ops.quantized_decomposed`` ops and
folds them into quantized tensors with exactly the scale and zero point the ops name. So every
ActivationQuantizer becomes a per-tensor quantize/dequantize pair with its scale and zero point, and every
QuantizedLayer a float op whose weight passes through a per-channel quantize/dequantize pair. The weight
constant is ``weight_int × weight_scale`` and the bias ``bias_int × bias_scale`` (bias scale = input scale ×
weight scale, as TFLite requires), so the converter's rounding gives back our integers exactly;
``check_carried`` in the exporter verifies that in the written file.

TFLite int8 activations are signed. uint8 activations map onto int8 without loss: q_s = q_u − 128 with zero
point z_u − 128 represents the same real values on the same grid.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import fx, nn

from ..errors import ExportError, UnsupportedError
from ..layers import set_submodule
from ..quantization.modules import ActivationQuantizer, QuantizedLayer

INT8_MIN, INT8_MAX = -128, 127
WEIGHT_MAX = 127  # TFLite int8 weights are symmetric in [-127, 127], zero point 0
_UINT8_TO_INT8 = 128
_QUANTIZATION_PACKAGE = ActivationQuantizer.__module__.rpartition(".")[0]  # edgecompress.quantization


def _qd():
    return torch.ops.quantized_decomposed  # registered by litert_torch's import (torchao's PT2E op library)


def activation_qparams(quantizer: ActivationQuantizer) -> tuple[float, int]:
    """The (scale, int8 zero point) a TFLite tensor carries for ``quantizer``."""
    if not quantizer.frozen:
        raise ExportError("an ActivationQuantizer is still observing: calibrate and convert the model "
                          "(edgecompress.quantize does both) before exporting int8")
    if quantizer.dtype_name not in ("int8", "uint8"):
        raise UnsupportedError(f"activation dtype {quantizer.dtype_name!r} cannot be exported to TFLite; "
                               "allowed: int8, uint8")
    shift = _UINT8_TO_INT8 if quantizer.dtype_name == "uint8" else 0
    return float(quantizer.scale), int(quantizer.zero_point) - shift


class _QuantDequant(nn.Module):
    """An ActivationQuantizer in reference form: int8 per-tensor quantize then dequantize."""

    def __init__(self, quantizer: ActivationQuantizer) -> None:
        super().__init__()
        self.scale, self.zero_point = activation_qparams(quantizer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        qd = _qd()
        q = qd.quantize_per_tensor.default(x, self.scale, self.zero_point, INT8_MIN, INT8_MAX, torch.int8)
        return qd.dequantize_per_tensor.default(q, self.scale, self.zero_point, INT8_MIN, INT8_MAX, torch.int8)


def _check_layer(name: str, layer: QuantizedLayer) -> None:
    if not layer.converted:
        raise ExportError(f"layer {name!r} is not converted: calibrate and convert the model "
                          "(edgecompress.quantize does both) before exporting int8")
    problems = []
    if getattr(layer, "weight_only", False):
        problems.append("weight-only (float input)")
    if layer.weight_bits not in (7, 8):
        problems.append(f"{layer.weight_bits}-bit weights")
    if getattr(layer, "group_size", None) is not None:
        problems.append(f"group-wise scales (group_size={layer.group_size})")
    if not getattr(layer, "symmetric", True) or bool((layer.weight_zero_point != 0).any()):
        problems.append("asymmetric weights")
    if problems:
        raise UnsupportedError(
            f"layer {name!r} has {', '.join(problems)}; TFLite int8 carries static layers with symmetric 8-bit "
            "(or reduced-range 7-bit) weights, zero point 0, one scale per output channel or per tensor. "
            "Export low-bit, group-wise or weight-only layers to ONNX, or keep the layer in 8 bits")


class _ReferenceLayer(nn.Module):
    """A QuantizedLayer in reference form: float weight = our integers × our scales, through a per-channel
    quantize/dequantize pair that tells the converter those scales; float bias on the int32 grid."""

    def __init__(self, name: str, layer: QuantizedLayer) -> None:
        super().__init__()
        _check_layer(name, layer)
        self.kind = layer.kind
        if self.kind != "linear":
            self.stride, self.padding = layer.stride, layer.padding
            self.dilation, self.groups = layer.dilation, layer.groups
        shape = [-1] + [1] * (layer.weight_int.dim() - 1)
        self.register_buffer("weight", layer.weight_int.float() * layer.weight_scale.reshape(shape))
        self.register_buffer("weight_scale", layer.weight_scale.float().clone())
        self.register_buffer("weight_zero_point", torch.zeros(layer.out_channels, dtype=torch.int64))
        self.register_buffer("bias", None if layer.bias_int is None
                             else layer.bias_int.double().mul(layer.bias_scale.double()).float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        qd = _qd()
        args = (self.weight_scale, self.weight_zero_point, 0, -WEIGHT_MAX, WEIGHT_MAX, torch.int8)
        weight = qd.dequantize_per_channel.default(qd.quantize_per_channel.default(self.weight, *args), *args)
        if self.kind == "linear":
            return F.linear(x, weight, self.bias)
        conv = F.conv1d if self.kind == "conv1d" else F.conv2d
        return conv(x, weight, self.bias, self.stride, self.padding, self.dilation, self.groups)


def quantization_modules(model: nn.Module) -> list[str]:
    """The submodules of ``model`` that belong to one of edgecompress's quantized representations."""
    return [f"{name or type(model).__name__} ({type(m).__name__})" for name, m in model.named_modules()
            if type(m).__module__.startswith(_QUANTIZATION_PACKAGE)]


def is_quantized(model: nn.Module) -> bool:
    return any(isinstance(m, (ActivationQuantizer, QuantizedLayer)) for m in model.modules())


def reference_form(model: nn.Module) -> nn.Module:
    """A copy of ``model`` (our quantized fx GraphModule) with every quantization module in reference form."""
    if not isinstance(model, fx.GraphModule) or not is_quantized(model):
        _refuse_other_quantization(model)
        raise UnsupportedError(
            f"int8 TFLite export needs edgecompress's quantized representation (the GraphModule "
            f"edgecompress.quantize returns); got a float {type(model).__name__}. The exporter lowers our "
            "integers and scales and never quantizes on its own")
    model = copy.deepcopy(model).eval()
    for name, module in list(model.named_modules()):
        if isinstance(module, ActivationQuantizer):
            set_submodule(model, name, _QuantDequant(module))
        elif isinstance(module, QuantizedLayer):
            set_submodule(model, name, _ReferenceLayer(name, module))
    _refuse_other_quantization(model)
    return model


def _refuse_other_quantization(model: nn.Module) -> None:
    left = quantization_modules(model)
    if left:
        raise UnsupportedError(f"TFLite int8 export cannot carry {', '.join(left[:3])}{' …' if len(left) > 3 else ''}; "
                               "it carries static int8 quantization (edgecompress.quantize) only")
