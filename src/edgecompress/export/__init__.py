"""Exporters behind one interface, the format/scheme support table, and parity checks."""

from .base import Artifact, Exporter, Runner
from .registry import EXPORTERS, check_supported, get_exporter, support_table

__all__ = ["Artifact", "Exporter", "Runner", "EXPORTERS", "check_supported", "get_exporter", "support_table"]
