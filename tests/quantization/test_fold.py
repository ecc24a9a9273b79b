import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from edgecompress.quantization import fold_batchnorm, fold_bn_into


def _randomise_bn(bn: nn.modules.batchnorm._BatchNorm) -> None:
    with torch.no_grad():
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.2, 3)
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.5, 0.5)


def test_fold_bn_into_conv_and_linear_is_exact():
    torch.manual_seed(0)
    cases = [(nn.Conv1d(3, 8, 3, padding=1), nn.BatchNorm1d(8), torch.randn(4, 3, 16)),
             (nn.Conv2d(3, 8, 3, bias=False), nn.BatchNorm2d(8), torch.randn(4, 3, 8, 8)),
             (nn.Conv2d(8, 8, 3, groups=8), nn.BatchNorm2d(8), torch.randn(4, 8, 8, 8)),
             (nn.Linear(5, 6), nn.BatchNorm1d(6), torch.randn(4, 5))]
    for layer, bn, x in cases:
        _randomise_bn(bn)
        ref = bn.eval()(layer.eval()(x))
        folded = fold_bn_into(layer, bn)
        torch.testing.assert_close(folded(x), ref, atol=1e-5, rtol=1e-5)


class ConvBnNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 4)
        self.bn3 = nn.BatchNorm1d(4)

    def forward(self, x):
        y = torch.relu(self.bn(self.conv(x)))
        y = y + self.bn2(self.conv2(y))
        return self.bn3(self.fc(y.mean((2, 3))))


def test_graph_fold_removes_every_foldable_bn_and_keeps_outputs():
    torch.manual_seed(0)
    net = ConvBnNet().eval()
    for bn in (net.bn, net.bn2, net.bn3):
        _randomise_bn(bn)
    x = torch.randn(5, 3, 8, 8)
    gm = fx.symbolic_trace(net)
    ShapeProp(gm).propagate(x)
    removed = fold_batchnorm(gm)
    assert sorted(removed) == ["bn", "bn2", "bn3"]
    assert not any(isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d) for m in gm.modules())
    torch.testing.assert_close(gm(x), net(x), atol=1e-5, rtol=1e-5)


def test_bn_after_conv_with_two_users_is_not_folded():
    class Shared(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 1)
            self.bn = nn.BatchNorm2d(4)

        def forward(self, x):
            y = self.conv(x)
            return self.bn(y) + y

    net = Shared().eval()
    _randomise_bn(net.bn)
    gm = fx.symbolic_trace(net)
    assert fold_batchnorm(gm) == []
    x = torch.randn(2, 3, 4, 4)
    torch.testing.assert_close(gm(x), net(x))
