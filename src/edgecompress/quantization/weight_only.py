"""Weight-only quantization by module swap: no graph capture and no calibration data.

Weight-only layers take and give float activations, so nothing has to be placed between layers and the
model's forward never needs tracing. That makes this the route for models torch.fx cannot trace (Hugging
Face transformers, data-dependent control flow), and it needs no calibration data. Embedding tables are
quantized too (row-wise groups), since in language models they are often the largest tensor.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..errors import UnsupportedError
from ..layers import matches, set_submodule
from . import ops
from .config import QuantConfig
from .lowbit import fit_qparams, quantize_weight
from .modules import QuantizedLayer
from .qparams import weight_format


class QuantizedEmbedding(nn.Module):
    """An embedding table stored as low-bit integers with group-wise scales along the embedding dimension;
    lookups gather rows of the dequantized table (the exporter stores the integers packed)."""

    def __init__(self, embedding: nn.Embedding, *, bits: int, group_size: int | None, symmetric: bool = True) -> None:
        super().__init__()
        if embedding.max_norm is not None or embedding.scale_grad_by_freq or embedding.sparse:
            raise UnsupportedError("embeddings with max_norm, scale_grad_by_freq or sparse gradients cannot be "
                                   "quantized; list them under ignore")
        self.padding_idx = embedding.padding_idx
        self.bits, self.group_size = bits, group_size
        fmt = weight_format(bits, symmetric)
        self.quant_min, self.quant_max = fmt.qmin, fmt.qmax
        weight = embedding.weight.detach().float()
        scale, zero_point = fit_qparams(weight, fmt, symmetric=symmetric, per_channel=True, group_size=group_size,
                                        search=bits < 8)
        self.register_buffer("weight_int", quantize_weight(weight, scale, zero_point, fmt, group_size))
        self.register_buffer("weight_scale", scale)
        self.register_buffer("weight_zero_point", zero_point)

    def dequantized_weight(self) -> torch.Tensor:
        block = self.group_size or 0
        return ops.dequantize_weight(self.weight_int, self.weight_scale, self.weight_zero_point, block,
                                     self.quant_min, self.quant_max)

    def forward(self, indices: torch.Tensor) -> torch.Tensor:
        return nn.functional.embedding(indices, self.dequantized_weight(), self.padding_idx)

    def extra_repr(self) -> str:
        return f"{tuple(self.weight_int.shape)}, int{self.bits}, group_size={self.group_size}"


def quantize_weights(model: nn.Module, config: QuantConfig, *, embeddings: bool = True) -> nn.Module:
    """A copy of ``model`` whose Conv/Linear layers (and, with ``embeddings``, nn.Embedding tables) hold
    ``config.weight_bits``-bit weights (``layer_bits`` per layer; 16 keeps a layer float) with
    ``config.group_size`` weights per scale. Activations stay float; ``model`` is left untouched."""
    if not config.weight_only:
        raise UnsupportedError("quantize_weights makes weight-only models; set QuantConfig(weight_only=True), or "
                               "use quantize() for static quantization of weights and activations")
    model = copy.deepcopy(model).eval()
    swapped = 0
    for name, module in list(model.named_modules()):
        if not name or matches(name, config.ignore):
            continue
        bits = config.bits_for(name)
        if bits >= 16:
            continue
        if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Linear)):
            if isinstance(module, (nn.Conv1d, nn.Conv2d)) and module.padding_mode != "zeros":
                continue
            layer = QuantizedLayer(module, per_channel=config.per_channel, bits=bits,
                                   group_size=config.group_size if bits < 8 else None,
                                   symmetric=config.weight_symmetric, weight_only=True,
                                   ternary=config.ternary and bits == 2)
            layer.convert(None)
        elif embeddings and isinstance(module, nn.Embedding):
            layer = QuantizedEmbedding(module, bits=bits, group_size=config.group_size if bits < 8 else None,
                                       symmetric=config.weight_symmetric)
        else:
            continue
        set_submodule(model, name, layer)
        swapped += 1
    if not swapped:
        raise UnsupportedError(f"{type(model).__name__} has no Conv/Linear/Embedding layer left to quantize "
                               f"(ignore: {list(config.ignore)})")
    return model
