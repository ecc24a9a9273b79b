import os
from pathlib import Path

import pytest

# Tests never touch the user's cache; a repo-local one survives between local runs (CI starts fresh).
_REPO = Path(__file__).resolve().parent.parent
os.environ.setdefault("EDGECOMPRESS_CACHE", str(_REPO / ".pytest_cache" / "edgecompress"))


@pytest.fixture(scope="session")
def fast_measure():
    from edgecompress import MeasureSettings

    return MeasureSettings(warmup=2, iters=5, max_seconds=1.0, batch_size=8)
