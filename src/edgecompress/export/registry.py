"""Which formats exist and which quantization schemes each can carry, checked before any work starts."""

from __future__ import annotations

from ..errors import UnsupportedError
from .base import Exporter
from .onnx import OnnxExporter
from .tflite import TfliteExporter
from .torchscript import TorchScriptExporter

EXPORTERS: dict[str, Exporter] = {e.name: e for e in (OnnxExporter(), TfliteExporter(), TorchScriptExporter())}
# Formats the recipe may name but this version cannot write yet.
PLANNED_FORMATS: tuple[str, ...] = ()


def get_exporter(fmt: str) -> Exporter:
    if fmt in EXPORTERS:
        return EXPORTERS[fmt]
    if fmt in PLANNED_FORMATS:
        raise UnsupportedError(f"output format {fmt!r} is not available in this version of edgecompress; "
                               f"available formats: {', '.join(EXPORTERS)}")
    raise UnsupportedError(f"unknown output format {fmt!r}; available formats: {', '.join(EXPORTERS)}")


def check_supported(fmt: str, scheme: str) -> Exporter:
    """The exporter for ``fmt``, or UnsupportedError if it cannot carry ``scheme`` (checked before any
    calibration or training, so a recipe fails in a second instead of after an hour)."""
    exporter = get_exporter(fmt)
    if not exporter.supports(scheme):
        carriers = [name for name, e in EXPORTERS.items() if e.supports(scheme)]
        raise UnsupportedError(
            f"format {fmt!r} cannot carry {scheme} models; it supports {', '.join(sorted(exporter.schemes))}. "
            f"Formats that carry {scheme}: {', '.join(carriers) or 'none yet'}")
    return exporter


def support_table() -> dict[str, list[str]]:
    return {name: sorted(e.schemes) for name, e in EXPORTERS.items()}
