"""Students (D5): a smaller model of the teacher's own family, or the user's, checked against the teacher.

``make_student`` reads the sizes from the teacher instance (so a teacher already pruned or built with other
settings gets a proportionate student), multiplies every width by ``width`` and, in families with repeated
blocks, the number of blocks of each stage by ``depth`` (keeping at least one). The student has the
teacher's input and output shapes and fresh weights; ``check_student`` verifies the output shape of any
student on example inputs."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from ..errors import DataError, RecipeError, UnsupportedError
from ..models import DigitsCNN, Mnist1dCNN, MobileNetV2Small, ResNetSmall, TinyTransformer, build_model
from .config import check_number


def make_student(teacher_or_name: nn.Module | str, *, width: float = 0.5, depth: float | None = None,
                 seed: int | None = None) -> nn.Module:
    """A freshly initialised student of the teacher's family: widths × ``width`` (0 < width <= 1) and, where
    the family has repeated blocks (MobileNetV2Small, ResNetSmall, TinyTransformer), each stage's block count
    × ``depth`` (0 < depth <= 1, rounded up; None keeps them). ``teacher_or_name`` is a model or a reference
    model name ("mnist1d_cnn" or "builtin:mnist1d_cnn"). ``seed`` makes the initialisation repeatable without
    touching the global generator."""
    check_number("width", width, minimum=0.0, maximum=1.0, inclusive=False)
    if depth is not None:
        check_number("depth", depth, minimum=0.0, maximum=1.0, inclusive=False)
    teacher = _template(teacher_or_name)
    builder = next((build for family, build in _BUILDERS if isinstance(teacher, family)), None)
    if builder is None:
        families = ", ".join(family.__name__ for family, _ in _BUILDERS)
        raise UnsupportedError(f"make_student knows the reference families ({families}), not "
                               f"{type(teacher).__name__}; build a smaller model yourself and pass it as the "
                               "student (check_student verifies its output shape)")
    if seed is None:
        student = builder(teacher, width, depth)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            student = builder(teacher, width, depth)
    check_student(teacher, student)
    return student


def check_student(teacher: nn.Module, student: nn.Module, *, example_inputs: tuple[torch.Tensor, ...] | None = None
                  ) -> nn.Module:
    """Accept a student (user-supplied or built) when it maps the example inputs (default: the teacher's,
    else the student's ``example_inputs()``) to the teacher's output shape; DataError naming both shapes
    otherwise. Both models run in eval mode without gradients; their modes are restored. Returns ``student``."""
    for role, model in (("teacher", teacher), ("student", student)):
        if not isinstance(model, nn.Module):
            raise RecipeError(f"the {role} must be a torch.nn.Module, got {type(model).__name__}")
    inputs = example_inputs
    if inputs is None:
        source = next((m for m in (teacher, student) if callable(getattr(m, "example_inputs", None))), None)
        if source is None:
            raise RecipeError("checking a student needs example inputs: pass example_inputs=(tensor, ...) or use a "
                              "teacher with an example_inputs() method")
        inputs = source.example_inputs()
    inputs = tuple(inputs) if isinstance(inputs, (tuple, list)) else (inputs,)
    t_out, s_out = _output(teacher, inputs, "teacher"), _output(student, inputs, "student")
    if t_out.shape != s_out.shape:
        raise DataError(f"the student's output shape {tuple(s_out.shape)} differs from the teacher's "
                        f"{tuple(t_out.shape)} on inputs of shapes {[tuple(x.shape) for x in inputs]}; a student "
                        "must produce the teacher's output shape")
    return student


def _output(model: nn.Module, inputs: tuple[torch.Tensor, ...], role: str) -> torch.Tensor:
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(*inputs)
    except Exception as e:
        raise DataError(f"the {role} cannot run on inputs of shapes {[tuple(x.shape) for x in inputs]}: "
                        f"{type(e).__name__}: {e}") from None
    finally:
        model.train(was_training)
    if not isinstance(out, torch.Tensor):
        raise UnsupportedError(f"the {role} returns {type(out).__name__}; students are checked on models that "
                               "return one tensor")
    return out


def _template(teacher_or_name: nn.Module | str) -> nn.Module:
    if isinstance(teacher_or_name, nn.Module):
        return teacher_or_name
    if isinstance(teacher_or_name, str):
        with torch.random.fork_rng(devices=[]):  # only the architecture is read: leave the generator alone
            return build_model(teacher_or_name.removeprefix("builtin:"))
    raise RecipeError(f"make_student takes a teacher nn.Module or a reference model name, got "
                      f"{type(teacher_or_name).__name__}")


def _scaled(channels: int, width: float) -> int:
    return max(1, round(channels * width))


def _blocks(count: int, depth: float | None) -> int:
    return count if depth is None else max(1, math.ceil(count * depth))


def _no_blocks(teacher: nn.Module, depth: float | None) -> None:
    if depth not in (None, 1.0):
        raise UnsupportedError(f"{type(teacher).__name__} has no repeated blocks to remove, so depth must be None "
                               f"or 1.0 (got {depth}); make it smaller with width")


def _conv_like(conv: nn.Conv1d | nn.Conv2d, in_channels: int, out_channels: int) -> nn.Module:
    if conv.groups != 1:
        raise UnsupportedError(f"scaling a grouped convolution ({conv}) is not supported here")
    return type(conv)(in_channels, out_channels, conv.kernel_size, stride=conv.stride, padding=conv.padding,
                      dilation=conv.dilation, bias=conv.bias is not None, padding_mode=conv.padding_mode)


def _bn_like(bn: nn.modules.batchnorm._BatchNorm, channels: int) -> nn.Module:
    return type(bn)(channels, eps=bn.eps, momentum=bn.momentum, affine=bn.affine,
                    track_running_stats=bn.track_running_stats)


def _linear_like(fc: nn.Linear, in_features: int) -> nn.Linear:
    return nn.Linear(in_features, fc.out_features, bias=fc.bias is not None)


def _mnist1d_cnn(teacher: Mnist1dCNN, width: float, depth: float | None) -> nn.Module:
    _no_blocks(teacher, depth)
    positions, rest = divmod(teacher.fc.in_features, teacher.conv3.out_channels)
    if rest:
        raise UnsupportedError(f"the teacher's fc takes {teacher.fc.in_features} features, not a multiple of "
                               f"conv3's {teacher.conv3.out_channels} channels; cannot scale it")
    student = Mnist1dCNN(teacher.fc.out_features)
    channels = teacher.conv1.in_channels
    for name in ("conv1", "conv2", "conv3"):
        conv = getattr(teacher, name)
        out = _scaled(conv.out_channels, width)
        setattr(student, name, _conv_like(conv, channels, out))
        channels = out
    student.fc = _linear_like(teacher.fc, channels * positions)
    return student


def _digits_cnn(teacher: DigitsCNN, width: float, depth: float | None) -> nn.Module:
    _no_blocks(teacher, depth)
    student = DigitsCNN(teacher.fc.out_features)
    channels = teacher.conv1.in_channels
    for conv_name, bn_name in (("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3")):
        conv = getattr(teacher, conv_name)
        out = _scaled(conv.out_channels, width)
        setattr(student, conv_name, _conv_like(conv, channels, out))
        setattr(student, bn_name, _bn_like(getattr(teacher, bn_name), out))
        channels = out
    student.fc = _linear_like(teacher.fc, channels)
    return student


def _mobilenetv2(teacher: MobileNetV2Small, width: float, depth: float | None) -> nn.Module:
    stages: list[list[int]] = []  # [expansion, out_channels, repeats, stride], as the constructor's settings
    for block in teacher.blocks:
        hidden = block.dw_conv.in_channels
        in_channels = block.expand_conv.in_channels if block.has_expand else hidden
        if hidden % in_channels:
            raise UnsupportedError(f"a block expands {in_channels} to {hidden} channels, not a whole multiple; "
                                   "cannot read its settings to scale it")
        expansion, out, stride = hidden // in_channels, block.project_conv.out_channels, block.dw_conv.stride[0]
        if stages and stride == 1 and stages[-1][:2] == [expansion, out]:
            stages[-1][2] += 1
        else:
            stages.append([expansion, out, 1, stride])
    settings = [(t, c, _blocks(n, depth), s) for t, c, n, s in stages]
    in_channels, size = teacher.input_shape[0], teacher.input_shape[1]
    return MobileNetV2Small(len(teacher.input_shape) - 1, in_channels, teacher.fc.out_features, width,
                            input_size=size, stem_stride=teacher.stem_conv.stride[0],
                            stem_channels=teacher.stem_conv.out_channels,
                            head_channels=_scaled(teacher.head_conv.out_channels, width), settings=settings)


def _resnet(teacher: ResNetSmall, width: float, depth: float | None) -> nn.Module:
    stages = (teacher.layer1, teacher.layer2, teacher.layer3)
    widths = [_scaled(stage[0].conv1.out_channels, width) for stage in stages]
    blocks = [_blocks(len(stage), depth) for stage in stages]
    return ResNetSmall(len(teacher.input_shape) - 1, teacher.conv1.in_channels, teacher.fc.out_features,
                       input_size=teacher.input_shape[1], widths=widths, blocks_per_stage=blocks)


def _transformer(teacher: TinyTransformer, width: float, depth: float | None) -> nn.Module:
    dim, first = teacher.patch_embed.out_channels, teacher.blocks[0]
    heads = first.attn.heads
    mlp_ratio, rest = divmod(first.fc1.out_features, dim)
    if rest:
        raise UnsupportedError(f"the teacher's MLP width {first.fc1.out_features} is not a multiple of its "
                               f"embedding width {dim}; cannot scale it")
    student_dim = max(1, round(dim * width / heads)) * heads  # keep the heads, narrow each
    return TinyTransformer(teacher.patch_embed.in_channels, teacher.head.out_features, length=teacher.input_shape[1],
                           patch=teacher.patch_embed.kernel_size[0], dim=student_dim, heads=heads,
                           depth=_blocks(len(teacher.blocks), depth), mlp_ratio=mlp_ratio)


_BUILDERS: tuple[tuple[type[nn.Module], Callable[..., nn.Module]], ...] = (
    (Mnist1dCNN, _mnist1d_cnn), (DigitsCNN, _digits_cnn), (MobileNetV2Small, _mobilenetv2),
    (ResNetSmall, _resnet), (TinyTransformer, _transformer))
