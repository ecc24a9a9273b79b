"""One error family: every failure a user can cause is an EdgeCompressError with a message that names
what was given and what is allowed."""

from __future__ import annotations


class EdgeCompressError(Exception):
    """Base of every error edgecompress raises on purpose."""


class RecipeError(EdgeCompressError):
    """A recipe key or value is unknown or out of range."""


class DataError(EdgeCompressError):
    """Data is missing, malformed, of the wrong shape, or not finite."""


class ModelLoadError(EdgeCompressError):
    """A model file or model reference cannot be loaded safely."""


class UnsupportedError(EdgeCompressError):
    """A valid request that this version or this combination does not support."""


class ExportError(EdgeCompressError):
    """Exporting, checking or running an artifact failed."""


class IntegrityError(EdgeCompressError):
    """An artifact's bytes do not match what was recorded or signed."""


class MissingDependencyError(EdgeCompressError):
    """An optional dependency needed for this path is not installed."""


class EdgeCompressWarning(UserWarning):
    """A known anti-pattern that is allowed but probably not what the user wants."""
