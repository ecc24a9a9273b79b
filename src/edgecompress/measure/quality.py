"""How good the outputs are: accuracy against labels, and fidelity to a reference model's outputs."""

from __future__ import annotations

import math

import numpy as np
import torch

from ..errors import DataError

ArrayLike = torch.Tensor | np.ndarray

CLASS_AXIS = 1  # PyTorch's convention (as in F.cross_entropy): (N, C) or (N, C, H, W)


def _as_numpy(x: ArrayLike, what: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        array = (x.float() if x.dtype == torch.bfloat16 else x).numpy()  # numpy has no bfloat16
    else:
        array = np.asarray(x)
    if array.dtype.kind in "fc" and not np.isfinite(array).all():
        raise DataError(f"{what} contains NaN or Inf values")
    return array


def _same_shape(a: np.ndarray, b: np.ndarray, names: str) -> None:
    if a.shape != b.shape:
        raise DataError(f"{names} must have one shape, got {tuple(a.shape)} and {tuple(b.shape)}")


def _logits(x: ArrayLike, what: str) -> np.ndarray:
    array = _as_numpy(x, what)
    if array.ndim < 2 or array.shape[0] == 0:
        raise DataError(f"{what} must be a non-empty batch of shape (N, C, ...), got shape {tuple(array.shape)}")
    return array


def accuracy(logits: ArrayLike, labels: ArrayLike) -> float:
    """Fraction of samples whose arg-max over the class axis (axis 1) equals the label. ``labels`` has
    the shape of ``logits`` without that axis: (N,) for (N, C)."""
    scores = _logits(logits, "logits")
    target = _as_numpy(labels, "labels")
    expected = scores.shape[:CLASS_AXIS] + scores.shape[CLASS_AXIS + 1:]
    if target.shape != expected:
        raise DataError(f"labels must have shape {expected} for logits of shape {tuple(scores.shape)}, "
                        f"got {tuple(target.shape)}")
    return float((scores.argmax(axis=CLASS_AXIS) == target).mean())


def sqnr_db(ref: ArrayLike, test: ArrayLike) -> float:
    """Signal-to-quantization-noise ratio 20·log10(‖ref‖ / ‖ref − test‖) in dB; inf when equal."""
    r = _as_numpy(ref, "ref").astype(np.float64)
    t = _as_numpy(test, "test").astype(np.float64)
    _same_shape(r, t, "ref and test")
    noise = float(np.linalg.norm((r - t).ravel()))
    if noise == 0.0:
        return math.inf
    signal = float(np.linalg.norm(r.ravel()))
    return 20.0 * math.log10(signal / noise) if signal > 0 else -math.inf


def _mean_cosine(a: np.ndarray, b: np.ndarray) -> float:
    a2, b2 = a.reshape(a.shape[0], -1), b.reshape(b.shape[0], -1)
    na, nb = np.linalg.norm(a2, axis=1), np.linalg.norm(b2, axis=1)
    dots = (a2 * b2).sum(axis=1)
    both_zero = (na == 0) & (nb == 0)
    cos = np.where(both_zero, 1.0, dots / np.maximum(na * nb, np.finfo(np.float64).tiny))
    return float(cos.mean())


def fidelity(ref_logits: ArrayLike, test_logits: ArrayLike) -> dict:
    """How closely ``test_logits`` follow ``ref_logits`` (both (N, C, ...)): top1_agreement (fraction of
    samples with the same arg-max over axis 1), sqnr_db, cosine (mean over samples of the cosine
    similarity of the flattened outputs; 1.0 for two all-zero outputs) and max_abs_diff."""
    r = _logits(ref_logits, "ref_logits").astype(np.float64)
    t = _logits(test_logits, "test_logits").astype(np.float64)
    _same_shape(r, t, "ref_logits and test_logits")
    return {
        "top1_agreement": float((r.argmax(axis=CLASS_AXIS) == t.argmax(axis=CLASS_AXIS)).mean()),
        "sqnr_db": sqnr_db(r, t),
        "cosine": _mean_cosine(r, t),
        "max_abs_diff": float(np.abs(r - t).max()),
    }
