import copy

import pytest
import torch
from torch import nn

from edgecompress.errors import DataError
from edgecompress.quantization import ActivationQuantizer, QuantConfig, QuantizedLayer, quantize
from edgecompress.testing.numeric import sqnr
from edgecompress.testing.tiny_models import TinyConv1d, with_batchnorm_statistics


class ResidualNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 16, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(16)
        self.pool = nn.MaxPool2d(2)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        y = torch.relu(y + self.bn2(self.conv2(y)))
        return self.fc(self.gap(self.pool(y)).flatten(1))


@pytest.fixture
def net():
    torch.manual_seed(0)
    return with_batchnorm_statistics(ResidualNet().eval())


def test_int8_ptq_is_close_to_float_and_stores_integers(net):
    x = torch.randn(128, 3, 8, 8)
    before = copy.deepcopy(net.state_dict())
    q = quantize(net, QuantConfig(), calibration=x)
    value = sqnr(net(x), q(x))
    assert value > 30.0  # measured 43.5 dB
    layers = [m for m in q.modules() if isinstance(m, QuantizedLayer)]
    assert len(layers) == 3 and all(m.converted and m.weight_int.dtype == torch.int8 for m in layers)
    assert all(m.bias_int.dtype == torch.int32 and m.weight_float is None for m in layers)
    quantizers = [m for m in q.modules() if isinstance(m, ActivationQuantizer)]
    assert quantizers and all(m.frozen and m.zero_point.dtype == torch.uint8 for m in quantizers)
    for k, v in net.state_dict().items():  # the input model is never modified
        torch.testing.assert_close(v, before[k])


def test_int8_activations_and_per_tensor_weights(net):
    x = torch.randn(64, 3, 8, 8)
    q = quantize(net, QuantConfig(activation_dtype="int8", per_channel=False), calibration=x)
    assert all(m.zero_point.dtype == torch.int8 for m in q.modules() if isinstance(m, ActivationQuantizer))
    for m in q.modules():
        if isinstance(m, QuantizedLayer):
            assert torch.unique(m.weight_scale).numel() == 1
    assert sqnr(net(x), q(x)) > 25.0  # measured 39 dB


def test_percentile_observer_runs_end_to_end(net):
    x = torch.randn(64, 3, 8, 8)
    q = quantize(net, QuantConfig(observer="percentile", percentile=99.9), calibration=x)
    assert sqnr(net(x), q(x)) > 25.0


def test_ignored_layers_stay_float_by_name_and_regex(net):
    x = torch.randn(32, 3, 8, 8)
    q = quantize(net, QuantConfig(ignore=("fc", "re:conv2")), calibration=x)
    assert isinstance(q.get_submodule("fc"), nn.Linear)
    assert isinstance(q.get_submodule("conv2"), nn.Conv2d)
    assert isinstance(q.get_submodule("conv1"), QuantizedLayer)


def test_refuses_to_quantize_without_calibration_data(net):
    with pytest.raises(DataError, match="calibration"):
        quantize(net, QuantConfig(), calibration=None)
    with pytest.raises(DataError, match="empty"):
        quantize(net, QuantConfig(), calibration=[])
    bad = torch.randn(8, 3, 8, 8)
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(DataError, match="NaN"):
        quantize(net, QuantConfig(), calibration=bad)


def test_calibration_accepts_labelled_batches(net):
    batches = [(torch.randn(16, 3, 8, 8), torch.zeros(16, dtype=torch.long)) for _ in range(3)]
    q = quantize(net, QuantConfig(), calibration=batches)
    assert q(torch.randn(2, 3, 8, 8)).shape == (2, 10)


def test_a_pruned_filter_keeps_its_bias():
    """An all-zero filter gets the layer's largest scale, not the tiny one its empty range implies: with that,
    input scale × weight scale would be so small that the filter's bias saturated int32."""
    torch.manual_seed(0)
    model = TinyConv1d().eval()
    with torch.no_grad():
        model.conv2.weight[3].zero_()
        model.bn2.bias[3] = 2.0
    x = torch.randn(64, 1, 16)
    gm = quantize(model, QuantConfig(), calibration=x)
    layer = gm.conv2
    assert layer.weight_scale[3] == layer.weight_scale.max()
    bias = layer.bias_int[3].double() * layer.bias_scale[3].double()
    bn = model.bn2
    folded = (model.conv2.bias[3] - bn.running_mean[3]) * bn.weight[3] / torch.sqrt(bn.running_var[3] + bn.eps)
    assert abs(float(bias) - float(folded + bn.bias[3])) < 1e-3  # int32 saturated before the fix: 0.19 for 2.1
