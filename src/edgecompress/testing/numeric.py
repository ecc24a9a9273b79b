"""Numeric comparisons for lossy transforms (quantization, pruning, export parity)."""

from __future__ import annotations

import math

import numpy as np
import torch

from ..errors import DataError


def sqnr(ref: torch.Tensor | np.ndarray, test: torch.Tensor | np.ndarray) -> float:
    """Signal-to-quantization-noise ratio in dB, 20·log10(‖ref‖ / ‖ref − test‖); ``math.inf`` when equal."""
    a, b = _as_float64(ref), _as_float64(test)
    if a.shape != b.shape:
        raise DataError(f"sqnr needs tensors of one shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    noise = float(np.linalg.norm(a - b))
    if noise == 0.0:
        return math.inf
    signal = float(np.linalg.norm(a))
    return -math.inf if signal == 0.0 else 20.0 * math.log10(signal / noise)


def _as_float64(value: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().double().numpy()
    return np.asarray(value, dtype=np.float64)
