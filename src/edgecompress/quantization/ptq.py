"""Post-training static quantization: prepare → calibrate → convert."""

from __future__ import annotations

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
