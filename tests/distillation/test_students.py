"""D5: students built from each reference family by width and depth, and user-supplied students."""

import pytest
import torch
from torch import nn

from edgecompress.distillation import check_student, make_student
from edgecompress.errors import DataError, ModelLoadError, RecipeError, UnsupportedError
from edgecompress.model_io import load_model
from edgecompress.models import REFERENCE_MODELS, build_model
from edgecompress.testing.tiny_models import TinyMLP


def _params(model):
    return sum(p.numel() for p in model.parameters())


def _blocks(model):
    names = ("blocks", "layer1", "layer2", "layer3")
    return sum(len(getattr(model, n)) for n in names if hasattr(model, n))


# parameter ratio teacher/student at width 0.5, measured: see the assertion
@pytest.mark.parametrize("name", sorted(REFERENCE_MODELS))
def test_each_reference_family_gets_a_smaller_student_with_the_same_shapes(name):
    torch.manual_seed(0)
    teacher = build_model(name)
    student = make_student(name, width=0.5, seed=0)
    assert type(student) is type(teacher)
    x = teacher.example_inputs(3)[0]
    with torch.no_grad():
        assert student.eval()(x).shape == teacher.eval()(x).shape
    ratio = _params(teacher) / _params(student)
    # measured: mnist1d_cnn 3.32, digits_cnn 3.82, mobilenetv2 3.66 (1-D) 3.53 (2-D), resnet 3.94 / 3.96,
    # transformer 3.82
    assert ratio >= 3.0, f"{name}: only {ratio:.2f}x fewer parameters"
    assert _blocks(student) == _blocks(teacher)


@pytest.mark.parametrize("name", ["mobilenetv2_mnist1d", "mobilenetv2_digits", "resnet_mnist1d", "transformer_mnist1d"])
def test_depth_removes_blocks_in_families_with_blocks(name):
    teacher = build_model(name)
    student = make_student(teacher, width=0.5, depth=0.5)
    assert 0 < _blocks(student) < _blocks(teacher)
    x = teacher.example_inputs(2)[0]
    with torch.no_grad():
        assert student.eval()(x).shape == teacher.eval()(x).shape
    assert _params(student) < _params(make_student(teacher, width=0.5))


def test_block_counts_follow_the_teacher_instance():
    resnet = make_student("builtin:resnet_mnist1d", width=0.5, depth=0.5)
    assert [len(s) for s in (resnet.layer1, resnet.layer2, resnet.layer3)] == [1, 1, 1]
    assert [s[0].conv1.out_channels for s in (resnet.layer1, resnet.layer2, resnet.layer3)] == [16, 32, 64]
    mobilenet = make_student("mobilenetv2_mnist1d", depth=0.5)  # repeats (1, 2, 3, 3, 2) → (1, 1, 2, 2, 1)
    assert len(mobilenet.blocks) == 7
    transformer = make_student("transformer_mnist1d", width=0.5)
    assert transformer.blocks[0].attn.heads == 4 and transformer.patch_embed.out_channels == 32


def test_a_trained_teacher_gives_a_student_of_fresh_weights():
    teacher = load_model("builtin:digits_cnn").model
    student = make_student(teacher, width=0.5, seed=3)
    again = make_student(teacher, width=0.5, seed=3)
    assert all(torch.equal(a, b) for a, b in zip(student.state_dict().values(), again.state_dict().values(),
                                                 strict=True))
    assert student.conv3.out_channels == 32 and teacher.conv3.out_channels == 64


def test_refusals():
    with pytest.raises(UnsupportedError, match="no repeated blocks"):
        make_student("mnist1d_cnn", depth=0.5)
    with pytest.raises(UnsupportedError, match="TinyMLP"):
        make_student(TinyMLP())
    with pytest.raises(ModelLoadError, match="unknown reference model"):
        make_student("no_such_model")
    for bad in (0.0, 1.5, -1, float("nan")):
        with pytest.raises(RecipeError, match="width"):
            make_student("mnist1d_cnn", width=bad)
    with pytest.raises(RecipeError, match="depth"):
        make_student("resnet_mnist1d", depth=0)


def test_a_user_supplied_student_is_checked_on_the_teacher_inputs():
    teacher = build_model("mnist1d_cnn")
    good = nn.Sequential(nn.Flatten(), nn.Linear(40, 10))
    assert check_student(teacher, good) is good
    with pytest.raises(DataError, match=r"\(1, 4\) differs from the teacher's \(1, 10\)"):
        check_student(teacher, nn.Sequential(nn.Flatten(), nn.Linear(40, 4)))
    with pytest.raises(DataError, match="student cannot run"):
        check_student(teacher, nn.Linear(7, 10))
    with pytest.raises(RecipeError, match="example inputs"):
        check_student(nn.Linear(4, 2), nn.Linear(4, 2))
    assert check_student(nn.Linear(4, 2), nn.Linear(4, 2), example_inputs=(torch.randn(3, 4),)) is not None
