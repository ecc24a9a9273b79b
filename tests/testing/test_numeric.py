"""sqnr: the dB figure every lossy-transform test relies on."""

import math

import numpy as np
import pytest
import torch

from edgecompress.errors import DataError
from edgecompress.testing.numeric import sqnr


def test_known_values():
    ref = torch.tensor([3.0, 4.0])  # ‖ref‖ = 5
    assert sqnr(ref, torch.tensor([3.0, 4.5])) == pytest.approx(20.0)  # noise 0.5 → 20·log10(10)
    assert sqnr(ref, torch.tensor([3.0, 4.05])) == pytest.approx(40.0)
    assert sqnr(ref, torch.zeros(2)) == pytest.approx(0.0)


def test_identical_is_infinite_and_tensors_and_arrays_agree():
    x = torch.randn(4, 8, generator=torch.Generator().manual_seed(0))
    assert sqnr(x, x.clone()) == math.inf
    noisy = x + 0.01 * torch.randn(4, 8, generator=torch.Generator().manual_seed(1))
    value = sqnr(x, noisy)
    assert 30.0 < value < 50.0  # 1 % noise on unit-variance data: ≈ 40 dB
    assert sqnr(x.numpy(), noisy.numpy()) == pytest.approx(value, abs=1e-9)
    assert sqnr(x, noisy.numpy()) == pytest.approx(value, abs=1e-9)
    assert sqnr(x.to(torch.bfloat16), noisy) == pytest.approx(value, abs=3.0)


def test_scale_invariant_and_symmetric_in_sign():
    x = np.linspace(-1, 1, 50)
    y = x + 0.05 * np.sin(np.arange(50))
    assert sqnr(10 * x, 10 * y) == pytest.approx(sqnr(x, y), abs=1e-9)
    assert sqnr(-x, -y) == pytest.approx(sqnr(x, y), abs=1e-9)


def test_zero_reference_and_shape_mismatch():
    assert sqnr(np.zeros(3), np.ones(3)) == -math.inf
    with pytest.raises(DataError, match=r"one shape, got \(2, 3\) and \(3, 2\)"):
        sqnr(torch.zeros(2, 3), torch.zeros(3, 2))
