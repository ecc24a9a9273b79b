"""Post-training static quantization: prepare → calibrate → convert."""

from __future__ import annotations

import dataclasses

import torch
from rich.progress import Progress
from torch import fx, nn

from ..progress import tracked
from .adaround import AdaRoundSettings, adaround
from .bias_correction import correct_bias
from .config import QuantConfig
from .equalize import equalize
from .graph import convert, prepare
from .inputs import Batch, CalibrationData, calibration_batches, model_inputs
from .modules import ActivationQuantizer, QuantizedLayer
from .smoothing import SmoothingConfig, smooth


@torch.no_grad()
def calibrate(gm: fx.GraphModule, batches: list[Batch] | list[torch.Tensor], progress: Progress | None = None) -> None:
    gm.eval()
    for batch in tracked(batches, progress, "calibrate"):
        gm(*model_inputs(batch))


def quantize(model: nn.Module, config: QuantConfig | None = None, *, calibration: CalibrationData,
             example_inputs: tuple[torch.Tensor, ...] | None = None, progress: Progress | None = None
             ) -> fx.GraphModule:
    """Static INT8 quantization of ``model`` (left untouched) calibrated on ``calibration`` inputs.
    Returns the quantized representation, runnable in PyTorch and exportable."""
    config = config or QuantConfig()
    batches = calibration_batches(calibration, inputs=len(example_inputs) if example_inputs else 1)
    example_inputs = example_inputs or tuple(t[:1] for t in batches[0])
    source = model
    if config.smoothing:
        source, config = smoothed_for(model, config, batches)
    if config.equalization:
        source = equalize(model, example_inputs, relu6=config.equalization_relu6, ignore=config.ignore,
                          fold_bn=config.fold_batchnorm).model
    gm = prepare(source, config, example_inputs)
    calibrate(gm, batches, progress)
    if config.adaround:
        adaround(gm, batches, AdaRoundSettings(iterations=config.adaround_iterations))
    if config.bias_correction:  # after AdaRound: it corrects the shift of the final rounding
        correct_bias(gm, batches)
    return convert(gm)


def smoothed_for(model: nn.Module, config: QuantConfig, batches: list[Batch]) -> tuple[nn.Module, QuantConfig]:
    """``model`` smoothed as ``config`` says, and ``config`` with its per-layer bit-widths following the
    smoothed Linear layers (each now the ``linear`` child of a Smoothed wrapper)."""
    result = smooth(model, batches, SmoothingConfig(alpha=config.smoothing_alpha, ignore=config.ignore,
                                                    reduce_range=config.reduce_range), inputs=len(batches[0]))
    moved = {name for name, alpha in result.alphas.items() if alpha is not None}
    layer_bits = tuple((f"{name}.linear" if name in moved else name, bits) for name, bits in config.layer_bits)
    return result.model, dataclasses.replace(config, layer_bits=layer_bits)


def layer_summary(gm: nn.Module) -> list[dict]:
    """Per-layer bit-widths and scales, for the report."""
    rows = []
    for name, mod in gm.named_modules():
        if isinstance(mod, QuantizedLayer):
            rows.append({"layer": name, "kind": mod.kind, "weight_bits": mod.weight_bits,
                         "per_channel": mod.per_channel, "input": mod.input_quantizer})
    quantizers = [m for m in gm.modules() if isinstance(m, ActivationQuantizer)]
    if quantizers:
        rows.append({"activation_quantizers": len(quantizers), "activation_dtype": quantizers[0].dtype_name})
    return rows
