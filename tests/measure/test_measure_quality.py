import math

import numpy as np
import pytest
import torch

from edgecompress.errors import DataError
from edgecompress.measure import accuracy, fidelity, sqnr_db


def test_accuracy_from_tensors_and_arrays():
    logits = torch.tensor([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [0.0, 0.0, 1.0], [5.0, 0.0, 0.0]])
    labels = torch.tensor([0, 1, 1, 0])
    assert accuracy(logits, labels) == 0.75
    assert accuracy(logits.numpy(), labels.numpy()) == 0.75


def test_accuracy_shape_mismatch_names_both_shapes():
    with pytest.raises(DataError, match=r"shape \(4,\) for logits of shape \(4, 3\), got \(3,\)"):
        accuracy(np.zeros((4, 3)), np.zeros(3))


def test_sqnr_on_known_vectors():
    ref = np.array([1.0, 0.0, 0.0, 0.0])
    assert sqnr_db(ref, ref + np.array([0.0, 0.1, 0.0, 0.0])) == pytest.approx(20.0)  # ‖1‖ / ‖0.1‖
    assert sqnr_db(torch.tensor(ref), torch.tensor(ref)) == math.inf
    with pytest.raises(DataError, match=r"\(4,\).*\(2, 2\)"):
        sqnr_db(ref, ref.reshape(2, 2))


def test_fidelity_on_known_logits():
    ref = np.array([[1.0, 0.0], [0.0, 1.0]])
    test = np.array([[1.0, 0.0], [1.0, 0.0]])
    f = fidelity(ref, torch.tensor(test))
    assert f["top1_agreement"] == 0.5
    assert f["cosine"] == pytest.approx(0.5)  # 1 for the first sample, 0 for the orthogonal second
    assert f["sqnr_db"] == pytest.approx(0.0)  # ‖ref‖ = ‖ref − test‖ = √2
    assert f["max_abs_diff"] == 1.0
    assert fidelity(ref, ref) == {"top1_agreement": 1.0, "sqnr_db": math.inf, "cosine": 1.0, "max_abs_diff": 0.0}


def test_fidelity_rejects_mismatched_or_non_finite_logits():
    with pytest.raises(DataError, match=r"\(2, 2\).*\(2, 3\)"):
        fidelity(np.zeros((2, 2)), np.zeros((2, 3)))
    with pytest.raises(DataError, match="NaN"):
        fidelity(np.zeros((2, 2)), np.array([[0.0, np.nan], [0.0, 0.0]]))
