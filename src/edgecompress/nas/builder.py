"""Build a mobile network from a list of block specs (N1): stem → blocks → optional 1×1 head → pool → Linear.

Specs are ``BlockSpec`` objects or plain mappings (as they come from YAML), validated before any layer is
built, so that a bad spec fails with the index and the key at fault."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields

import torch
from torch import nn

from ..errors import RecipeError
from .blocks import ConvBNAct, DepthwiseSeparable, InvertedResidual, MBConv, check_count, layers_for

KINDS = ("separable", "inverted_residual", "mbconv")


@dataclass(frozen=True)
class BlockSpec:
    """``repeats`` blocks of one ``kind``; the first has ``stride``, the others stride 1.

    expand_ratio and se_ratio apply to inverted_residual and mbconv (None: the block's default, 6 for both,
    se_ratio 0 for inverted_residual and 0.25 for mbconv); activation None takes the network's."""

    kind: str
    out_channels: int
    stride: int = 1
    repeats: int = 1
    kernel_size: int = 3
    expand_ratio: int | None = None
    se_ratio: float | None = None
    activation: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise RecipeError(f"unknown block kind {self.kind!r}; allowed: {', '.join(KINDS)}")
        check_count("out_channels", self.out_channels)
        check_count("stride", self.stride)
        check_count("repeats", self.repeats)
        if self.kind == "separable" and (self.expand_ratio is not None or self.se_ratio is not None):
            raise RecipeError("a 'separable' block has no expansion nor squeeze-excitation; expand_ratio and "
                              "se_ratio apply to 'inverted_residual' and 'mbconv'")


def _as_spec(index: int, spec: BlockSpec | Mapping) -> BlockSpec:
    if isinstance(spec, BlockSpec):
        return spec
    if not isinstance(spec, Mapping):
        raise RecipeError(f"stages[{index}] is a {type(spec).__name__}; allowed: a BlockSpec or a mapping")
    allowed = [f.name for f in fields(BlockSpec)]
    unknown = sorted(set(spec) - set(allowed))
    if unknown:
        raise RecipeError(f"stages[{index}] has unknown keys {unknown}; allowed: {', '.join(allowed)}")
    missing = [key for key in ("kind", "out_channels") if key not in spec]
    if missing:
        raise RecipeError(f"stages[{index}] lacks {', '.join(missing)}")
    try:
        return BlockSpec(**spec)
    except RecipeError as e:
        raise RecipeError(f"stages[{index}]: {e}") from None


def _block(spec: BlockSpec, in_channels: int, stride: int, dims: int, activation: str) -> nn.Module:
    act = spec.activation or activation
    if spec.kind == "separable":
        return DepthwiseSeparable(in_channels, spec.out_channels, kernel_size=spec.kernel_size, stride=stride,
                                  dims=dims, activation=act)
    options = {key: value for key, value in (("expand_ratio", spec.expand_ratio), ("se_ratio", spec.se_ratio))
               if value is not None}
    block = InvertedResidual if spec.kind == "inverted_residual" else MBConv
    return block(in_channels, spec.out_channels, stride=stride, kernel_size=spec.kernel_size, dims=dims,
                 activation=act, **options)


class MobileNet(nn.Module):
    """The network ``build_mobile_net`` returns; ``example_inputs()`` gives a batch of ``input_size``."""

    def __init__(self, stem: nn.Module, blocks: nn.Sequential, head: nn.Module, pool: nn.Module,
                 classifier: nn.Linear, input_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.stem, self.blocks, self.head, self.pool = stem, blocks, head, pool
        self.flatten = nn.Flatten()
        self.classifier = classifier
        self.input_shape = input_shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.flatten(self.pool(self.head(self.blocks(self.stem(x))))))

    def example_inputs(self, batch_size: int = 1) -> tuple[torch.Tensor, ...]:
        return (torch.randn(batch_size, *self.input_shape),)


def build_mobile_net(stages: Sequence[BlockSpec | Mapping], *, input_channels: int, num_classes: int, dims: int = 1,
                     stem_channels: int = 16, stem_stride: int = 1, head_channels: int | None = None,
                     activation: str = "relu6", input_size: int = 40) -> MobileNet:
    """A stem 3×3 conv-BN-act with ``stem_channels``, the blocks of ``stages`` in order, a 1×1 conv-BN-act to
    ``head_channels`` (none when None), global average pooling and a Linear to ``num_classes``.
    ``input_size`` is the length (or side) used by ``example_inputs()``; the network accepts any size."""
    if isinstance(stages, str | bytes | Mapping) or not isinstance(stages, Sequence) or not stages:
        raise RecipeError(f"stages must be a non-empty list of block specs, got {type(stages).__name__}"
                          f"{'' if not isinstance(stages, Sequence) else f' of {len(stages)}'}")
    specs = [_as_spec(i, spec) for i, spec in enumerate(stages)]
    for name, value in (("input_channels", input_channels), ("num_classes", num_classes),
                        ("stem_channels", stem_channels), ("stem_stride", stem_stride), ("input_size", input_size)):
        check_count(name, value)
    if head_channels is not None:
        check_count("head_channels", head_channels)
    _, _, pool = layers_for(dims)
    stem = ConvBNAct(dims, input_channels, stem_channels, 3, stride=stem_stride, activation=activation)
    blocks, channels = [], stem_channels
    for spec in specs:
        for i in range(spec.repeats):
            blocks.append(_block(spec, channels, spec.stride if i == 0 else 1, dims, activation))
            channels = spec.out_channels
    head: nn.Module = nn.Identity()
    if head_channels is not None:
        head, channels = ConvBNAct(dims, channels, head_channels, 1, activation=activation), head_channels
    return MobileNet(stem, nn.Sequential(*blocks), head, pool(1), nn.Linear(channels, num_classes),
                     (input_channels,) + (input_size,) * dims)
