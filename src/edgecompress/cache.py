"""Where edgecompress keeps what it can rebuild (generated data sets, trained reference weights)."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

from .errors import EdgeCompressError

CACHE_ENV = "EDGECOMPRESS_CACHE"


def cache_dir(*parts: str) -> Path:
    """``$EDGECOMPRESS_CACHE/parts...`` or the user cache folder, created if missing. The variable is read on
    every call so that tests and the CLI can redirect the cache without re-importing."""
    root = os.environ.get(CACHE_ENV) or platformdirs.user_cache_dir("edgecompress")
    path = Path(root, *parts)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise EdgeCompressError(f"cannot create the cache folder {path}: {e}; set {CACHE_ENV} to a writable "
                                "folder") from None
    return path
