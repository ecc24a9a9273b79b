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


@pytest.fixture(scope="session", autouse=True)
def _private_audit_log(tmp_path_factory):
    # compress() appends to an audit log: tests write to their own, never to the user's.
    if "EDGECOMPRESS_AUDIT_LOG" not in os.environ:
        os.environ["EDGECOMPRESS_AUDIT_LOG"] = str(tmp_path_factory.mktemp("audit") / "audit.jsonl")


@pytest.fixture(scope="session", autouse=True)
def _private_registry(tmp_path_factory):
    # compress() registers its artifact (S4): tests use their own registry, never the user's.
    if "EDGECOMPRESS_REGISTRY" not in os.environ:
        os.environ["EDGECOMPRESS_REGISTRY"] = str(tmp_path_factory.mktemp("registry"))
