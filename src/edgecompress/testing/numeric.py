"""Numeric comparisons for lossy transforms (quantization, pruning, export parity).

``sqnr`` is the measurement package's SQNR, so tests judge with exactly the figure reports print."""

from __future__ import annotations

from ..measure.quality import sqnr_db as sqnr

__all__ = ["sqnr"]
