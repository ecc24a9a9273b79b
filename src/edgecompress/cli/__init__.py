"""The `edgecompress` command: a thin typer app that builds the inputs and calls the Python API. Each module
registers its commands on the one app."""

from __future__ import annotations

from . import compress, registry, report, security  # noqa: F401  (they register their commands)
from .common import app

__all__ = ["app", "main"]


def main() -> None:
    app()
