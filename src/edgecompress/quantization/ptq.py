"""Post-training static quantization: prepare → calibrate → convert."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from rich.progress import Progress
from torch import fx, nn

from ..errors import DataError
from ..progress import tracked
from .adaround import AdaRoundSettings, adaround
from .bias_correction import correct_bias
from .config import QuantConfig
from .equalize import equalize
from .graph import convert, prepare
from .modules import ActivationQuantizer, QuantizedLayer

CalibrationData = torch.Tensor | Iterable[torch.Tensor] | Iterable[tuple[torch.Tensor, ...]]


def calibration_batches(calibration: CalibrationData, batch_size: int = 32) -> list[torch.Tensor]:
    if calibration is None:
        raise DataError("post-training static quantization needs calibration data (representative inputs); "
                        "none was given, and edgecompress does not quantize uncalibrated")
    if isinstance(calibration, torch.Tensor):
        batches = list(calibration.split(batch_size))
    else:
        batches = [b[0] if isinstance(b, (tuple, list)) else b for b in calibration]
    batches = [b for b in batches if isinstance(b, torch.Tensor) and b.numel() > 0]
    if not batches:
        raise DataError("calibration data is empty: give at least one batch of representative inputs")
    for b in batches:
        if not torch.isfinite(b).all():
            raise DataError("calibration data contains NaN or Inf values")
    return batches


@torch.no_grad()
def calibrate(gm: fx.GraphModule, batches: list[torch.Tensor], progress: Progress | None = None) -> None:
    gm.eval()
    for batch in tracked(batches, progress, "calibrate"):
        gm(batch.float())


def quantize(model: nn.Module, config: QuantConfig | None = None, *, calibration: CalibrationData,
             example_inputs: tuple[torch.Tensor, ...] | None = None, progress: Progress | None = None
             ) -> fx.GraphModule:
    """Static INT8 quantization of ``model`` (left untouched) calibrated on ``calibration`` inputs.
    Returns the quantized representation, runnable in PyTorch and exportable."""
    config = config or QuantConfig()
    batches = calibration_batches(calibration)
    example_inputs = example_inputs or (batches[0][:1],)
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
