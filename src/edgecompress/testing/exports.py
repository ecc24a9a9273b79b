"""Artifacts that several tests need: a tiny model quantized to INT8 and exported as full-integer TFLite."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn


def int8_tflite(model: nn.Module, path: Path) -> Path:
    """``model`` (a tiny model with ``example_inputs()``) in static INT8 with int8 activations, calibrated on
    64 random samples (from torch's global generator: seed it for a repeatable file), exported to ``path`` as
    TFLite. Needs the tflite extra."""
    from ..export.tflite import TfliteExporter
    from ..quantization import QuantConfig, quantize

    model = model.eval()
    calibration = torch.cat([model.example_inputs(batch_size=16)[0] for _ in range(4)])
    qmodel = quantize(model, QuantConfig(activation_dtype="int8"), calibration=calibration)
    return TfliteExporter().export(qmodel, model.example_inputs(), path, scheme="int8").path
