import pytest
import torch

from edgecompress.errors import DataError, RecipeError, UnsupportedError
from edgecompress.quantization import MinMaxObserver, PercentileObserver, QuantConfig, make_observer, ops
from edgecompress.quantization.qparams import INT8, INT8_WEIGHT, UINT8, affine_qparams, symmetric_qparams


@pytest.mark.parametrize("fmt", [UINT8, INT8])
def test_round_trip_is_exact_on_the_grid_and_within_half_a_step_elsewhere(fmt):
    lo, hi = torch.tensor(-1.3), torch.tensor(2.1)
    scale, zp = affine_qparams(lo, hi, fmt)
    grid = (torch.arange(fmt.qmin, fmt.qmax + 1).float() - zp.float()) * scale
    torch.testing.assert_close(ops.fake_quantize(grid, scale, zp, fmt.qmin, fmt.qmax), grid, atol=1e-6, rtol=0)
    x = torch.rand(10_000) * 3.4 - 1.3
    err = (ops.fake_quantize(x, scale, zp, fmt.qmin, fmt.qmax) - x).abs().max()
    assert err <= scale / 2 + 1e-6


def test_zero_is_exactly_representable_even_for_positive_ranges():
    scale, zp = affine_qparams(torch.tensor(0.5), torch.tensor(4.0), UINT8)
    assert zp.item() == 0  # the range is widened to include 0
    zero = torch.zeros(3)
    assert torch.equal(ops.fake_quantize(zero, scale, zp, 0, 255), zero)


def test_values_outside_the_range_saturate():
    scale, zp = affine_qparams(torch.tensor(-1.0), torch.tensor(1.0), INT8)
    out = ops.fake_quantize(torch.tensor([-50.0, 50.0]), scale, zp, -128, 127)
    assert out[0] == pytest.approx(-1.0, abs=scale.item()) and out[1] == pytest.approx(1.0, abs=scale.item())


def test_symmetric_weight_quantization_per_channel_round_trip():
    torch.manual_seed(0)
    w = torch.randn(6, 4, 3) * torch.logspace(-2, 1, 6).reshape(6, 1, 1)
    scale, zp = symmetric_qparams(w.abs().reshape(6, -1).amax(1), INT8_WEIGHT)
    q = ops.quantize_per_channel(w, scale, zp, 0, -127, 127, torch.int8)
    assert q.dtype == torch.int8 and q.min() >= -127 and q.max() <= 127
    assert torch.all(q.reshape(6, -1).abs().amax(1) == 127)  # each channel uses its full range
    deq = ops.dequantize(q, scale, zp, 0)
    assert torch.all((deq - w).abs() <= scale.reshape(6, 1, 1) / 2 + 1e-7)


def test_minmax_observer_tracks_the_range_over_batches():
    obs = MinMaxObserver()
    obs(torch.tensor([0.5, 1.0]))
    obs(torch.tensor([-2.0, 0.0]))
    lo, hi = obs.range()
    assert (lo.item(), hi.item()) == (-2.0, 1.0)


def test_percentile_observer_clips_rare_outliers():
    torch.manual_seed(0)
    x = torch.randn(200_000)
    x[:5] = 1000.0
    obs = PercentileObserver(99.9)
    obs(x)
    lo, hi = obs.range()
    assert 2.5 < hi.item() < 4.0  # the 99.9th percentile of N(0,1) is 3.09; the outliers are ignored
    assert -4.0 < lo.item() < -2.5


def test_an_observer_that_saw_nothing_is_an_error():
    with pytest.raises(DataError, match="never observed"):
        MinMaxObserver().range()
    with pytest.raises(UnsupportedError):
        make_observer("kl")


def test_quant_config_rejects_bad_values_with_what_is_allowed():
    with pytest.raises(RecipeError, match="allowed: minmax, moving_average, percentile, mse, entropy"):
        QuantConfig(observer="kl")
    with pytest.raises(RecipeError, match="uint8, int8"):
        QuantConfig(activation_dtype="int4")
    with pytest.raises(RecipeError, match="regular expression"):
        QuantConfig(ignore=("re:(unclosed",))


def test_reduce_range_keeps_weights_in_seven_bits():
    import torch.nn as nn

    from edgecompress.quantization import QuantizedLayer

    torch.manual_seed(0)
    layer = nn.Linear(16, 8)
    full, reduced = QuantizedLayer(layer), QuantizedLayer(layer, reduce_range=True)
    assert full.weight_int.abs().max() == 127 and reduced.weight_int.abs().max() == 63
    assert (full.weight_bits, reduced.weight_bits) == (8, 7)
    err = (reduced.dequantized_weight() - layer.weight).abs().max()
    assert err <= reduced.weight_scale.max() / 2 + 1e-7
