"""A text-retrieval task built from text that ships with Python: the docstrings of public functions,
classes and methods in a fixed list of standard-library modules. The query is a docstring's first
sentence, the document is the rest; a model retrieves, for each query, its document among all documents.

The pairs are deterministic for one Python version (the docstrings are the interpreter's); nothing is
downloaded. Module lists are disjoint, so calibration text never overlaps evaluation text."""

from __future__ import annotations

import importlib
import inspect
import re
import warnings
from collections.abc import Collection
from dataclasses import dataclass

import numpy as np

from ..errors import DataError

# Evaluation and calibration draw from different modules, so that no text is seen in both.
EVAL_MODULES = (
    "argparse", "ast", "base64", "bisect", "calendar", "collections", "configparser", "contextlib", "copy",
    "csv", "dataclasses", "datetime", "difflib", "email.message", "enum", "fnmatch", "fractions", "ftplib",
    "functools", "getopt", "gettext", "glob", "gzip", "heapq", "hmac", "html.parser", "http.client",
    "imaplib", "inspect", "ipaddress", "json", "locale", "logging", "mailbox", "mimetypes", "netrc",
    "ntpath", "numbers", "operator", "optparse", "os", "pathlib", "pickle", "pkgutil", "platform",
    "plistlib", "posixpath", "pprint", "queue", "quopri", "random", "re", "sched", "shlex", "shutil",
    "smtplib", "socket", "statistics", "string", "subprocess", "tarfile", "tempfile", "textwrap",
    "threading", "timeit", "tokenize", "traceback", "typing", "unittest.case", "urllib.parse",
    "urllib.request", "uuid", "warnings", "weakref", "xml.dom.minidom", "zipfile",
)
CALIBRATION_MODULES = (
    "asyncio.base_events", "asyncio.streams", "cmd", "code", "codecs", "concurrent.futures._base", "decimal",
    "dis", "doctest", "email.utils", "filecmp", "fileinput", "http.cookiejar", "http.server",
    "importlib.metadata", "io", "lzma", "multiprocessing.pool", "pdb", "poplib", "pydoc", "selectors", "shelve",
    "socketserver", "sqlite3.dbapi2", "ssl", "sysconfig", "trace", "tracemalloc", "unittest.mock",
    "wave", "xml.etree.ElementTree", "xmlrpc.client", "zipimport",
)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z(`'\"])")
_MIN_QUERY_CHARS = 20
_MIN_DOCUMENT_CHARS = 40


@dataclass(frozen=True)
class RetrievalPair:
    source: str  # module.qualified_name the docstring belongs to
    query: str
    document: str


def split_docstring(doc: str) -> tuple[str, str] | None:
    """(first sentence, the rest) of a docstring with whitespace collapsed, or None when it has no second
    sentence or either part is too short to retrieve by."""
    text = " ".join(inspect.cleandoc(doc).split())
    parts = _SENTENCE_END.split(text, maxsplit=1)
    if len(parts) != 2:
        return None
    query, document = parts[0].strip(), parts[1].strip()
    if len(query) < _MIN_QUERY_CHARS or len(document) < _MIN_DOCUMENT_CHARS or ">>>" in query:
        return None
    return query, document


def _own_doc(obj) -> str | None:
    doc = getattr(obj, "__doc__", None)
    return doc if isinstance(doc, str) else None


def _members(module) -> list[tuple[str, object]]:
    """Public functions and classes defined in ``module`` (not re-exported), and their public methods with
    a docstring of their own, sorted by qualified name."""
    found = []
    for name, obj in sorted(vars(module).items()):
        if name.startswith("_") or getattr(obj, "__module__", None) != module.__name__:
            continue
        if inspect.isfunction(obj) or inspect.isbuiltin(obj):
            found.append((name, obj))
        elif inspect.isclass(obj):
            found.append((name, obj))
            for attr, member in sorted(vars(obj).items()):
                member = member.__func__ if isinstance(member, (staticmethod, classmethod)) else member
                if not attr.startswith("_") and inspect.isfunction(member):
                    found.append((f"{name}.{attr}", member))
    return found


def docstring_pairs(modules: tuple[str, ...] = EVAL_MODULES, *, max_pairs: int | None = None,
                    exclude: Collection[str] = ()) -> list[RetrievalPair]:
    """Query/document pairs from the docstrings in ``modules`` (in that order; modules this interpreter
    lacks are skipped). Queries and documents are each unique: a repeated one (an overridden method that
    copies its parent's docstring) is kept once, at its first occurrence. Pairs with a query or document in
    ``exclude`` are left out (two modules can share a docstring: keep calibration text out of the evaluation).
    ``max_pairs``: keep that many, spread evenly over the list so that every module part stays represented."""
    pairs: list[RetrievalPair] = []
    seen_queries: set[str] = {t.lower() for t in exclude}
    seen_documents: set[str] = set(exclude)
    for module_name in modules:
        try:
            module = importlib.import_module(module_name)
        except ImportError:  # an interpreter built without it (sqlite3 and ssl can be missing)
            continue
        with warnings.catch_warnings():  # reading a deprecated alias's docstring (typing.io) warns
            warnings.simplefilter("ignore", DeprecationWarning)
            members = [(qualname, _own_doc(obj)) for qualname, obj in _members(module)]
        for qualname, doc in members:
            split = split_docstring(doc) if doc else None
            if split is None:
                continue
            query, document = split
            key = query.lower()
            if key in seen_queries or document in seen_documents or query in seen_documents:
                continue
            seen_queries.add(key)
            seen_documents.add(document)
            pairs.append(RetrievalPair(f"{module_name}.{qualname}", query, document))
    if max_pairs is not None:
        if max_pairs < 1:
            raise DataError(f"max_pairs must be ≥ 1 or None, got {max_pairs}")
        if len(pairs) > max_pairs:
            picks = np.linspace(0, len(pairs) - 1, max_pairs).round().astype(int)
            pairs = [pairs[i] for i in picks]
    if not pairs:
        raise DataError(f"no docstring pairs found in modules {', '.join(modules)}")
    return pairs


def retrieval_metrics(query_embeddings, document_embeddings) -> dict:
    """Query i's relevant document is document i; documents are ranked by cosine similarity. Returns
    recall@1, recall@5, MRR (mean reciprocal rank) and n. Embeddings: (n, d) arrays or tensors."""
    q = np.asarray(query_embeddings, dtype=np.float64)
    d = np.asarray(document_embeddings, dtype=np.float64)
    if q.ndim != 2 or q.shape != d.shape or q.shape[0] == 0:
        raise DataError(f"query and document embeddings must be two (n, d) arrays of one shape, got "
                        f"{q.shape} and {d.shape}")
    q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
    d = d / np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-12)
    scores = q @ d.T
    relevant = np.diag(scores)[:, None]
    # rank = 1 + documents scoring strictly higher than the relevant one (ties count in its favour)
    ranks = 1 + (scores > relevant).sum(axis=1)
    return {"recall@1": float((ranks == 1).mean()), "recall@5": float((ranks <= 5).mean()),
            "mrr": float((1.0 / ranks).mean()), "n": int(q.shape[0])}
