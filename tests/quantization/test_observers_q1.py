"""Q1 observers: moving-average min-max, MSE search and entropy (KL) calibration, alone and inside PTQ."""

import math

import pytest
import torch

from edgecompress.datasets import load_dataset
from edgecompress.errors import DataError, UnsupportedError
from edgecompress.measure.quality import accuracy
from edgecompress.model_io import load_model
from edgecompress.quantization import QuantConfig, ops, quantize
from edgecompress.quantization.config import OBSERVERS
from edgecompress.quantization.observers import (
    OBSERVER_KINDS,
    EntropyObserver,
    MinMaxObserver,
    MovingAverageMinMaxObserver,
    MSEObserver,
    make_observer,
)
from edgecompress.quantization.qparams import INT8, UINT8, affine_qparams
from edgecompress.testing.numeric import sqnr
from edgecompress.testing.tiny_models import TinyConv1d, with_batchnorm_statistics


def _observe(kind, x, fmt=UINT8, batches=10):
    obs = make_observer(kind, fmt=fmt)
    for batch in x.split(math.ceil(x.numel() / batches)):
        obs(batch)
    lo, hi = obs.range()
    return lo.item(), hi.item()


def _quant_mse(x, lo, hi, fmt=UINT8):
    scale, zp = affine_qparams(torch.tensor(lo), torch.tensor(hi), fmt)
    return ((ops.fake_quantize(x, scale, zp, fmt.qmin, fmt.qmax) - x) ** 2).mean().item()


@pytest.fixture(scope="module")
def gaussian_with_rare_outliers():
    torch.manual_seed(0)
    x = torch.randn(1_000_000)
    x[123], x[456_789] = 25.0, -25.0
    return x


@pytest.mark.parametrize("kind", OBSERVER_KINDS)
def test_uniform_data_is_covered_without_clipping(kind):
    torch.manual_seed(0)
    x = torch.rand(200_000) * 4.0 - 1.0  # U(-1, 3): no tail to clip
    lo, hi = _observe(kind, x)
    assert lo == pytest.approx(-1.0, abs=0.02) and hi == pytest.approx(3.0, abs=0.02)


def test_mse_and_entropy_clip_rare_outliers_minmax_does_not(gaussian_with_rare_outliers):
    x = gaussian_with_rare_outliers
    assert _observe("minmax", x) == (-25.0, 25.0)
    for kind in ("mse", "entropy"):
        lo, hi = _observe(kind, x)
        # measured: mse ±7.43, entropy ±7.37; the body of N(0, 1) (|x| < 4.5) is never clipped
        assert -10.0 < lo < -4.5 and 4.5 < hi < 10.0, kind
    assert _quant_mse(x, *_observe("mse", x)) < _quant_mse(x, -25.0, 25.0)


def test_non_negative_tensors_keep_zero_as_the_low_end(gaussian_with_rare_outliers):
    x = torch.relu(gaussian_with_rare_outliers)  # post-ReLU: half the values are exact zeros
    for kind, limit in (("entropy", 6.0), ("mse", 20.0)):  # measured hi: entropy 4.48, mse 14.9
        lo, hi = _observe(kind, x)
        assert lo == 0.0 and 3.0 < hi < limit, kind


@pytest.mark.parametrize("fmt", [UINT8, INT8])
@pytest.mark.parametrize("dist", ["laplace", "student_t3"])
def test_mse_observer_error_is_at_most_minmax_on_heavy_tailed_data(fmt, dist):
    torch.manual_seed(1)
    law = torch.distributions.Laplace(0.0, 1.0) if dist == "laplace" else torch.distributions.StudentT(3.0)
    x = law.sample((200_000,))
    lo, hi = _observe("mse", x, fmt)
    mm_lo, mm_hi = _observe("minmax", x, fmt)
    assert mm_lo < lo and hi < mm_hi  # it clips the tails ...
    # ... and that pays: measured 22 % (Laplace) and 24 % (t3) lower error than min-max
    assert _quant_mse(x, lo, hi, fmt) < _quant_mse(x, mm_lo, mm_hi, fmt)
    assert _quant_mse(x, lo, hi, fmt) <= _quant_mse(x, *_observe("percentile", x, fmt), fmt)


def test_moving_average_starts_at_the_first_batch_and_converges():
    torch.manual_seed(0)
    obs = MovingAverageMinMaxObserver(averaging_constant=0.05)
    obs(torch.tensor([-10.0, 10.0]))
    assert [v.item() for v in obs.range()] == [-10.0, 10.0]
    batches = torch.rand(400, 1000) * 2.0 - 1.0
    for batch in batches:
        obs(batch)
    lo, hi = obs.range()
    # 0.95^400 leaves 1e-8 of the first batch; the rest averages batch extremes, all within 0.01 of ±1
    assert lo.item() == pytest.approx(-1.0, abs=0.01) and hi.item() == pytest.approx(1.0, abs=0.01)
    mm = MinMaxObserver()
    mm(torch.tensor([-10.0, 10.0]))
    mm(batches)
    assert mm.range()[1].item() == 10.0  # min-max never forgets the outlying batch


@pytest.mark.parametrize("cls", [MSEObserver, EntropyObserver])
def test_histogram_has_bounded_memory_and_rebins_exactly(cls):
    torch.manual_seed(0)
    obs = cls(fmt=UINT8, bins=512)
    seen = []
    for i in range(60):  # the range grows on both sides, by factors up to ~50
        batch = torch.randn(5_000) * (1.0 + i) + 0.3 * i
        if i % 7 == 0:
            batch = torch.cat([batch, torch.zeros(100)])
        obs(batch)
        seen.append(batch)
        assert obs.histogram.shape == (512,)
    x = torch.cat(seen)
    assert obs.histogram.sum().item() == x.numel()
    assert obs.min_val == x.min().item() and obs.max_val == x.max().item()
    # Merging whole bins equals binning everything once on the final edges (floor(floor(a)/k) = floor(a/k)).
    direct = torch.floor((x.double() - obs.edge_lo) / obs.width).clamp(0, 511).long().bincount(minlength=512)
    assert (obs.histogram - direct.double()).abs().sum().item() <= 2  # at most a value on an edge moves
    occupied = torch.nonzero(obs.histogram).reshape(-1)
    assert occupied[-1] - occupied[0] + 1 >= 512 // 2  # minimal merges keep half the bins over the data


@pytest.mark.parametrize("kind", OBSERVER_KINDS)
def test_constant_and_all_zero_tensors(kind):
    obs = make_observer(kind, fmt=UINT8)
    obs(torch.full((4, 8), 2.5))
    lo, hi = obs.range()
    scale, zp = affine_qparams(lo, hi, UINT8)
    out = ops.fake_quantize(torch.tensor([0.0, 2.5]), scale, zp, 0, 255)
    torch.testing.assert_close(out, torch.tensor([0.0, 2.5]), atol=0.01, rtol=0)
    zeros = make_observer(kind, fmt=UINT8)
    zeros(torch.zeros(3, 5))
    lo, hi = zeros.range()
    assert (lo.item(), hi.item()) == (0.0, 0.0)
    if kind != "moving_average":  # (which by design moves only 1 % of the way per batch)
        zeros(torch.linspace(-1.0, 2.0, 1000))  # a real range after an all-zero batch
        lo, hi = zeros.range()
        assert lo.item() < -0.4 and hi.item() > 0.9


@pytest.mark.parametrize("kind", OBSERVER_KINDS)
def test_an_observer_that_saw_nothing_raises_data_error(kind):
    obs = make_observer(kind, fmt=UINT8)
    obs(torch.empty(0))
    with pytest.raises(DataError, match="never observed"):
        obs.range()


def test_histogram_observers_reject_non_finite_values():
    with pytest.raises(DataError, match="NaN or Inf"):
        MSEObserver(fmt=UINT8)(torch.tensor([1.0, float("inf")]))


def test_make_observer_kinds_formats_and_errors():
    assert OBSERVER_KINDS == OBSERVERS  # the factory and QuantConfig accept the same names
    assert type(make_observer("moving_average")) is MovingAverageMinMaxObserver
    with pytest.raises(UnsupportedError, match="'minmax', 'moving_average', 'percentile', 'mse', 'entropy'"):
        make_observer("kl")
    for kind in ("mse", "entropy"):
        with pytest.raises(UnsupportedError, match="fmt="):
            make_observer(kind)
    with pytest.raises(TypeError):
        MSEObserver(UINT8)  # keyword-only
    with pytest.raises(UnsupportedError, match="qmin="):
        MSEObserver()
    with pytest.raises(UnsupportedError, match="not both"):
        EntropyObserver(fmt=UINT8, qmin=0, qmax=255)
    with pytest.raises(UnsupportedError, match="at least as many bins as levels"):
        EntropyObserver(qmin=0, qmax=255, bins=128)
    with pytest.raises(UnsupportedError, match="averaging_constant"):
        MovingAverageMinMaxObserver(0.0)
    torch.manual_seed(0)
    x = torch.distributions.Laplace(0.0, 1.0).sample((50_000,))
    by_fmt, by_bounds = MSEObserver(fmt=INT8), MSEObserver(qmin=-128, qmax=127)
    by_fmt(x), by_bounds(x)
    assert [v.item() for v in by_fmt.range()] == [v.item() for v in by_bounds.range()]


def _tiny_conv1d():
    torch.manual_seed(0)
    return with_batchnorm_statistics(TinyConv1d().eval())


# Least SQNR (dB) of the quantized TinyConv1d against float on its calibration inputs; measured: minmax 38.0,
# moving_average 30.7 (its EMA lags behind the range of 8 batches), percentile 36.8, mse 38.0, entropy 34.9.
_TINY_SQNR = {"minmax": 30.0, "moving_average": 24.0, "percentile": 30.0, "mse": 30.0, "entropy": 28.0}


@pytest.mark.parametrize("kind", OBSERVER_KINDS)
def test_ptq_of_tiny_conv1d_with_each_observer(kind):
    model = _tiny_conv1d()
    x = torch.randn(256, 1, 16)
    q = quantize(model, QuantConfig(observer=kind), calibration=x)
    assert sqnr(model(x), q(x)) > _TINY_SQNR[kind]


@pytest.fixture(scope="module")
def mnist1d():
    loaded = load_model("builtin:mnist1d_cnn")
    return loaded.model.eval(), load_dataset(loaded.dataset)


@pytest.mark.parametrize("kind", OBSERVER_KINDS)
def test_every_observer_keeps_mnist1d_cnn_accuracy_within_a_point(mnist1d, kind):
    model, data = mnist1d
    with torch.no_grad():
        reference = accuracy(model(data.x_test), data.y_test)  # 0.948
        q = quantize(model, QuantConfig(observer=kind), calibration=data.x_train[:512])
        # measured: minmax 0.947, moving_average 0.947, percentile 0.947, mse 0.946, entropy 0.946
        assert accuracy(q(data.x_test), data.y_test) >= reference - 0.01
