"""The structured-pruning architecture suite: one small network per family whose coupling a channel pruner must
get right (residual adds, grouped and depthwise convs, squeeze-excitation gates, concatenation, channel split and
shuffle, multi-head attention with LayerNorm, recurrent layers). Each has ``example_inputs()``, fewer than 200k
parameters, and runs in milliseconds on a CPU."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


def _conv_bn(cin: int, cout: int, k: int = 3, *, stride: int = 1, groups: int = 1, act: type[nn.Module] | None = nn.ReLU
             ) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    if act is not None:
        layers.append(act())
    return nn.Sequential(*layers)


class _Images(nn.Module):
    """Families on 3×16×16 images."""

    input_shape: tuple[int, ...] = (3, 16, 16)

    def example_inputs(self, batch_size: int = 2) -> tuple[torch.Tensor, ...]:
        return (torch.randn(batch_size, *self.input_shape),)


# --- ResNet bottleneck (with a grouped 3×3, ResNeXt-style) -------------------------------------------------------

class Bottleneck(nn.Module):
    """1×1 reduce → 3×3 (grouped) → 1×1 expand, added to the input or to a 1×1 projection of it."""

    def __init__(self, cin: int, mid: int, cout: int, groups: int = 1) -> None:
        super().__init__()
        self.reduce = _conv_bn(cin, mid, 1)
        self.conv = _conv_bn(mid, mid, 3, groups=groups)
        self.expand = _conv_bn(mid, cout, 1, act=None)
        self.shortcut = _conv_bn(cin, cout, 1, act=None) if cin != cout else nn.Identity()
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.expand(self.conv(self.reduce(x))) + self.shortcut(x))


class ResNetBottleneck(_Images):
    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = _conv_bn(3, 16)
        self.block1 = Bottleneck(16, 16, 32)
        self.block2 = Bottleneck(32, 16, 32, groups=4)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(32, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block2(self.block1(self.stem(x)))
        return self.fc(self.pool(x).flatten(1))


# --- MobileNetV3 block: hardswish, depthwise conv, squeeze-excitation with a hard sigmoid -------------------------

class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, reduced: int, act: type[nn.Module], gate: type[nn.Module]) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.reduce = nn.Conv2d(channels, reduced, 1)
        self.act = act()
        self.expand = nn.Conv2d(reduced, channels, 1)
        self.gate = gate()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(self.expand(self.act(self.reduce(self.pool(x)))))


class MobileNetV3Block(_Images):
    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = _conv_bn(3, 16, act=nn.Hardswish)
        self.expand = _conv_bn(16, 48, 1, act=nn.Hardswish)
        self.depthwise = _conv_bn(48, 48, 3, groups=48, act=nn.Hardswish)
        self.se = SqueezeExcite(48, 12, nn.ReLU, nn.Hardsigmoid)
        self.project = _conv_bn(48, 16, 1, act=None)
        self.head = _conv_bn(16, 64, 1, act=nn.Hardswish)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Linear(64, 32), nn.Hardswish(), nn.Linear(32, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = x + self.project(self.se(self.depthwise(self.expand(x))))
        return self.classifier(self.pool(self.head(x)).flatten(1))


# --- EfficientNet MBConv: SiLU, depthwise conv, squeeze-excitation with a sigmoid ---------------------------------

class MBConv(nn.Module):
    def __init__(self, cin: int, cout: int, expansion: int, stride: int) -> None:
        super().__init__()
        hidden = cin * expansion
        self.expand = _conv_bn(cin, hidden, 1, act=nn.SiLU)
        self.depthwise = _conv_bn(hidden, hidden, 3, stride=stride, groups=hidden, act=nn.SiLU)
        self.se = SqueezeExcite(hidden, max(1, cin // 4), nn.SiLU, nn.Sigmoid)
        self.project = _conv_bn(hidden, cout, 1, act=None)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.se(self.depthwise(self.expand(x))))
        return x + y if self.residual else y


class EfficientNetMBConv(_Images):
    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = _conv_bn(3, 16, act=nn.SiLU)
        self.blocks = nn.Sequential(MBConv(16, 16, 4, 1), MBConv(16, 24, 4, 2))
        self.head = _conv_bn(24, 64, 1, act=nn.SiLU)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.head(self.blocks(self.stem(x)))).flatten(1))


# --- DenseNet: every layer sees the concatenation of all earlier features ----------------------------------------

class DenseLayer(nn.Module):
    """Pre-activation BN-ReLU-1×1 conv-BN-ReLU-3×3 conv, whose ``growth`` new channels are appended to the input."""

    def __init__(self, cin: int, growth: int) -> None:
        super().__init__()
        self.norm1, self.relu1 = nn.BatchNorm2d(cin), nn.ReLU()
        self.conv1 = nn.Conv2d(cin, 4 * growth, 1, bias=False)
        self.norm2, self.relu2 = nn.BatchNorm2d(4 * growth), nn.ReLU()
        self.conv2 = nn.Conv2d(4 * growth, growth, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        new = self.conv2(self.relu2(self.norm2(self.conv1(self.relu1(self.norm1(x))))))
        return torch.cat([x, new], dim=1)


class DenseNetConcat(_Images):
    def __init__(self, num_classes: int = 10, growth: int = 8) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.dense = nn.Sequential(*(DenseLayer(16 + i * growth, growth) for i in range(3)))
        channels = 16 + 3 * growth
        self.transition = nn.Sequential(nn.BatchNorm2d(channels), nn.ReLU(), nn.Conv2d(channels, 24, 1, bias=False),
                                        nn.AvgPool2d(2))
        self.norm, self.relu = nn.BatchNorm2d(24), nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(24, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.transition(self.dense(self.stem(x)))
        return self.fc(self.pool(self.relu(self.norm(x))).flatten(1))


# --- ShuffleNetV2: channel split, a branch on one half, concatenation, channel shuffle ----------------------------

def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    b, c, h, w = x.shape
    return x.reshape(b, groups, c // groups, h, w).transpose(1, 2).reshape(b, c, h, w)


class ShuffleUnit(nn.Module):
    """Stride 1: split the channels in two, transform one half, concatenate, shuffle. Stride 2: both halves are
    transformed (the left by a depthwise + 1×1 branch) and the width doubles."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        half = cout // 2
        branch_in = cin if stride == 2 else cin // 2
        if stride == 2:
            self.left = nn.Sequential(_conv_bn(cin, cin, 3, stride=2, groups=cin, act=None), _conv_bn(cin, half, 1))
        self.right = nn.Sequential(_conv_bn(branch_in, half, 1), _conv_bn(half, half, 3, stride=stride, groups=half,
                                                                        act=None), _conv_bn(half, half, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            kept, x2 = x.chunk(2, dim=1)
            out = torch.cat([kept, self.right(x2)], dim=1)
        else:
            out = torch.cat([self.left(x), self.right(x)], dim=1)
        return channel_shuffle(out, 2)


class ShuffleNetSplit(_Images):
    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = _conv_bn(3, 24)
        self.units = nn.Sequential(ShuffleUnit(24, 24, 1), ShuffleUnit(24, 48, 2), ShuffleUnit(48, 48, 1))
        self.head = _conv_bn(48, 64, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.head(self.units(self.stem(x)))).flatten(1))


# --- SqueezeNet: fire modules (squeeze, then 1×1 and 3×3 expands concatenated), a convolutional classifier -------

class Fire(nn.Module):
    def __init__(self, cin: int, squeeze: int, expand: int) -> None:
        super().__init__()
        self.squeeze = nn.Sequential(nn.Conv2d(cin, squeeze, 1), nn.ReLU())
        self.expand1 = nn.Sequential(nn.Conv2d(squeeze, expand, 1), nn.ReLU())
        self.expand3 = nn.Sequential(nn.Conv2d(squeeze, expand, 3, padding=1), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.squeeze(x)
        return torch.cat([self.expand1(s), self.expand3(s)], dim=1)


class SqueezeNetFire(_Images):
    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.fire1 = Fire(32, 8, 16)
        self.fire2 = Fire(32, 12, 24)
        # SqueezeNet classifies with a 1×1 conv whose output channels are the classes, then averages.
        self.classifier = nn.Sequential(nn.Conv2d(48, num_classes, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                                        nn.Flatten())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.fire2(self.fire1(self.stem(x))))


# --- ViT encoder: patch embedding, class token, positional embedding, nn.MultiheadAttention, LayerNorm, MLP ------

class ViTBlock(nn.Module):
    def __init__(self, dim: int, heads: int, mlp: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp), nn.GELU(), nn.Linear(mlp, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm1(x)
        x = x + self.attn(y, y, y, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class ViTEncoder(_Images):
    def __init__(self, num_classes: int = 10, dim: int = 32, heads: int = 4, depth: int = 2, patch: int = 4) -> None:
        super().__init__()
        tokens = (self.input_shape[1] // patch) ** 2
        self.patch_embed = nn.Conv2d(3, dim, patch, stride=patch)
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.pos_embed = nn.Parameter(torch.randn(1, tokens + 1, dim) * 0.02)
        self.blocks = nn.Sequential(*(ViTBlock(dim, heads, 2 * dim) for _ in range(depth)))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x).flatten(2).transpose(1, 2)  # (B, tokens, dim)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        return self.head(self.norm(self.blocks(x))[:, 0])


# --- 1-D audio: strided front-end on a raw waveform, a grouped conv, global pooling ------------------------------

class AudioConv1d(nn.Module):
    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv1d(1, 16, 16, stride=4, padding=6, bias=False), nn.BatchNorm1d(16), nn.ReLU(), nn.MaxPool1d(2),
            nn.Conv1d(16, 32, 3, padding=1, bias=False), nn.BatchNorm1d(32), nn.ReLU(),
            nn.Conv1d(32, 32, 3, padding=1, groups=4, bias=False), nn.BatchNorm1d(32), nn.ReLU(), nn.MaxPool1d(2),
            nn.Conv1d(32, 64, 3, padding=1, bias=False), nn.BatchNorm1d(64), nn.ReLU(),
        )
        self.pool = nn.AdaptiveAvgPool1d(1)
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.features(x)).flatten(1))

    def example_inputs(self, batch_size: int = 2) -> tuple[torch.Tensor, ...]:
        return (torch.randn(batch_size, 1, 256),)


# --- Conv front-end + GRU/LSTM + Linear head --------------------------------------------------------------------

class RecurrentClassifier(nn.Module):
    """Conv1d feature extractor over (B, 8 features, 32 steps), a GRU or LSTM over time, a Linear on the last step."""

    def __init__(self, cell: str = "gru", num_classes: int = 10, hidden: int = 48) -> None:
        super().__init__()
        self.front = nn.Sequential(nn.Conv1d(8, 32, 3, padding=1), nn.BatchNorm1d(32), nn.ReLU(),
                                   nn.Conv1d(32, 32, 3, padding=1), nn.ReLU())
        rnn = {"gru": nn.GRU, "lstm": nn.LSTM}[cell]
        self.rnn = rnn(32, hidden, batch_first=True)
        self.fc = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(self.front(x).transpose(1, 2))
        return self.fc(out[:, -1])

    def example_inputs(self, batch_size: int = 2) -> tuple[torch.Tensor, ...]:
        return (torch.randn(batch_size, 8, 32),)


FAMILIES: dict[str, Callable[[], nn.Module]] = {
    "resnet_bottleneck": ResNetBottleneck,
    "mobilenetv3_se": MobileNetV3Block,
    "efficientnet_mbconv": EfficientNetMBConv,
    "densenet_concat": DenseNetConcat,
    "shufflenet_split": ShuffleNetSplit,
    "squeezenet_fire": SqueezeNetFire,
    "vit_encoder": ViTEncoder,
    "audio_conv1d": AudioConv1d,
    "gru_classifier": lambda: RecurrentClassifier("gru"),
    "lstm_classifier": lambda: RecurrentClassifier("lstm"),
}


def build_family(name: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return FAMILIES[name]().eval()
