"""One architecture, two signal shapes: the layer classes for 1-D sequences and 2-D images."""

from __future__ import annotations

from typing import NamedTuple

from torch import nn

from ..errors import ModelLoadError


class Layers(NamedTuple):
    conv: type[nn.Conv1d] | type[nn.Conv2d]
    batch_norm: type[nn.BatchNorm1d] | type[nn.BatchNorm2d]
    global_pool: type[nn.AdaptiveAvgPool1d] | type[nn.AdaptiveAvgPool2d]


def layers_for(dims: int) -> Layers:
    if dims == 1:
        return Layers(nn.Conv1d, nn.BatchNorm1d, nn.AdaptiveAvgPool1d)
    if dims == 2:
        return Layers(nn.Conv2d, nn.BatchNorm2d, nn.AdaptiveAvgPool2d)
    raise ModelLoadError(f"dims must be 1 (sequences) or 2 (images), got {dims!r}")
