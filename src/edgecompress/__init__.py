"""edgecompress: compress trained PyTorch models for edge devices and measure the real artifact."""

from importlib.metadata import version as _version

__version__ = _version("edgecompress")
