"""Shipped test helpers: tiny models with ``example_inputs()`` and numeric comparisons, reusable by our
tests and by anyone checking a technique or an exporter against edgecompress."""

from .numeric import sqnr
from .tiny_models import TinyConv1d, TinyMLP, TinyResidual2d

__all__ = ["sqnr", "TinyConv1d", "TinyMLP", "TinyResidual2d"]
