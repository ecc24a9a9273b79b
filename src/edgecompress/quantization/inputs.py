"""Calibration data as the model's positional inputs: one tensor for most models, several for models such as
a sentence encoder that takes (input_ids, attention_mask)."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from ..errors import DataError

CalibrationData = torch.Tensor | Iterable[torch.Tensor] | Iterable[tuple[torch.Tensor, ...]]
Batch = tuple[torch.Tensor, ...]  # the model's positional inputs for one batch


def calibration_batches(calibration: CalibrationData, batch_size: int = 32, *, inputs: int = 1) -> list[Batch]:
    """``calibration`` as a list of input tuples for a model of ``inputs`` positional inputs: a tensor is split
    into batches; an iterable yields tensors or tuples whose first ``inputs`` items are the inputs (anything
    after them, such as labels, is dropped)."""
    if calibration is None:
        raise DataError("post-training static quantization needs calibration data (representative inputs); "
                        "none was given, and edgecompress does not quantize uncalibrated")
    if isinstance(calibration, torch.Tensor):
        batches = [(b,) for b in calibration.split(batch_size)]
    else:
        batches = [tuple(b[:inputs]) if isinstance(b, (tuple, list)) else (b,) for b in calibration]
    batches = [b for b in batches if b and all(isinstance(t, torch.Tensor) for t in b) and b[0].numel() > 0]
    if not batches:
        raise DataError("calibration data is empty: give at least one batch of representative inputs")
    for b in batches:
        if len(b) != inputs:
            raise DataError(f"a calibration batch has {len(b)} input tensor(s); the model takes {inputs}")
        if not all(torch.isfinite(t).all() for t in b if t.is_floating_point()):
            raise DataError("calibration data contains NaN or Inf values")
    return batches


def model_inputs(batch: Batch | torch.Tensor) -> Batch:
    """The positional inputs of one batch: float tensors as float32, integer ones (token ids, masks) as given."""
    batch = (batch,) if isinstance(batch, torch.Tensor) else tuple(batch)
    return tuple(t.float() if t.is_floating_point() else t for t in batch)
