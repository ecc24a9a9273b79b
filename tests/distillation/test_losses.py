"""D1 response KD, D2 feature losses and D3 attention maps, against hand computations."""

import math

import pytest
import torch
import torch.nn.functional as F

from edgecompress.distillation import attention_loss, attention_map, feature_loss, kd_loss
from edgecompress.errors import DataError, RecipeError, UnsupportedError

STUDENT = torch.tensor([[2.0, 0.5, -1.0], [0.0, 1.0, 3.0]])
TEACHER = torch.tensor([[3.0, 0.0, -2.0], [1.0, 1.0, 0.5]])
LABELS = torch.tensor([0, 2])


def _softmax(row, t):
    e = [math.exp(v / t) for v in row]
    return [v / sum(e) for v in e]


def _hand_kl(s, t, temperature):
    """KL(softmax(t/T) || softmax(s/T)) averaged over rows, written out with math."""
    total = 0.0
    for s_row, t_row in zip(s.tolist(), t.tolist(), strict=True):
        p, q = _softmax(t_row, temperature), _softmax(s_row, temperature)
        total += sum(pi * (math.log(pi) - math.log(qi)) for pi, qi in zip(p, q, strict=True))
    return total / len(s)


def _hand_ce(s, labels):
    return sum(-math.log(_softmax(row, 1.0)[y]) for row, y in zip(s.tolist(), labels.tolist(), strict=True)) / len(s)


@pytest.mark.parametrize("temperature", [1.0, 4.0])
@pytest.mark.parametrize("alpha", [0.0, 0.3, 1.0])
def test_kd_loss_matches_the_hand_computation(temperature, alpha):
    expected = alpha * temperature ** 2 * _hand_kl(STUDENT, TEACHER, temperature) + (1 - alpha) * _hand_ce(
        STUDENT, LABELS)
    got = kd_loss(STUDENT, TEACHER, LABELS, temperature=temperature, alpha=alpha)
    torch.testing.assert_close(got, torch.tensor(expected), rtol=1e-5, atol=1e-6)


def test_beta_overrides_one_minus_alpha_and_no_labels_means_soft_loss_only():
    kl, ce = _hand_kl(STUDENT, TEACHER, 2.0), _hand_ce(STUDENT, LABELS)
    got = kd_loss(STUDENT, TEACHER, LABELS, temperature=2.0, alpha=0.5, beta=2.0)
    torch.testing.assert_close(got, torch.tensor(0.5 * 4 * kl + 2.0 * ce), rtol=1e-5, atol=1e-6)
    soft = kd_loss(STUDENT, TEACHER, None, temperature=2.0, alpha=0.5)
    torch.testing.assert_close(soft, torch.tensor(0.5 * 4 * kl), rtol=1e-5, atol=1e-6)
    assert kd_loss(TEACHER, TEACHER, None, temperature=3.0, alpha=1.0).abs().item() < 1e-6


def test_t_squared_keeps_the_soft_gradient_the_same_size_at_any_temperature():
    # Without T² the soft gradient shrinks as 1/T²; with it, it tends to (s − t − row mean)/(C·B) as T grows.
    diff = STUDENT - TEACHER
    limit = (diff - diff.mean(dim=1, keepdim=True)) / (3 * 2)
    for temperature in (1.0, 4.0, 20.0, 100.0, 400.0):
        s = STUDENT.clone().requires_grad_(True)
        kd_loss(s, TEACHER, None, temperature=temperature, alpha=1.0).backward()
        # gradient norms measured 0.39, 0.51, 0.50, 0.49, 0.49 (the limit's is 0.49)
        assert 0.75 < s.grad.norm() / limit.norm() < 1.1, temperature
    torch.testing.assert_close(s.grad, limit, rtol=0.01, atol=1e-3)  # measured: 0.16 % off at T = 400


def test_gradient_flows_only_to_the_student():
    s = STUDENT.clone().requires_grad_(True)
    t = TEACHER.clone().requires_grad_(True)
    kd_loss(s, t, LABELS, temperature=4.0, alpha=0.7).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert t.grad is None
    f_s, f_t = torch.randn(2, 3, 4, requires_grad=True), torch.randn(2, 3, 4, requires_grad=True)
    (feature_loss(f_s, f_t) + attention_loss(f_s, f_t)).backward()
    assert f_s.grad is not None and f_t.grad is None


@pytest.mark.parametrize("kwargs", [dict(temperature=0.0, alpha=0.5), dict(temperature=-1.0, alpha=0.5),
                                    dict(temperature=2.0, alpha=1.5), dict(temperature=2.0, alpha=-0.1),
                                    dict(temperature=2.0, alpha=0.5, beta=-1.0),
                                    dict(temperature=float("nan"), alpha=0.5)])
def test_kd_loss_rejects_bad_settings(kwargs):
    with pytest.raises(RecipeError):
        kd_loss(STUDENT, TEACHER, LABELS, **kwargs)


def test_kd_loss_rejects_mismatched_logits():
    with pytest.raises(DataError, match=r"\(2, 3\) and \(2, 4\)"):
        kd_loss(STUDENT, torch.zeros(2, 4), None, temperature=1.0, alpha=1.0)


def test_feature_loss_mse_and_normalized():
    s, t = torch.randn(4, 3, 5), torch.randn(4, 3, 5)
    torch.testing.assert_close(feature_loss(s, t), F.mse_loss(s, t))
    cosine = F.cosine_similarity(s.flatten(1), t.flatten(1), dim=1)
    torch.testing.assert_close(feature_loss(s, t, kind="normalized"), (2 - 2 * cosine).mean(), rtol=1e-5, atol=1e-6)
    # normalized ignores each sample's scale; mse does not
    torch.testing.assert_close(feature_loss(3 * s, t, kind="normalized"), feature_loss(s, t, kind="normalized"))
    assert feature_loss(3 * s, t) > feature_loss(s, t)
    with pytest.raises(DataError):
        feature_loss(s, t[:, :2])
    with pytest.raises(UnsupportedError):
        feature_loss(s, t, kind="l1")


def test_attention_map_is_the_normalised_channel_mean_of_squares():
    f = torch.tensor([[[1.0, -2.0, 0.0], [3.0, 0.0, 1.0]]])  # (B=1, C=2, L=3)
    squares = [(1 + 9) / 2, (4 + 0) / 2, (0 + 1) / 2]
    norm = math.sqrt(sum(v * v for v in squares))
    torch.testing.assert_close(attention_map(f), torch.tensor([[v / norm for v in squares]]))
    torch.testing.assert_close(attention_map(5 * f), attention_map(f))
    # channels last reads (B, T, D) as T positions
    torch.testing.assert_close(attention_map(f.transpose(1, 2), channels_last=True), attention_map(f))
    with pytest.raises(UnsupportedError, match="positions"):
        attention_map(torch.randn(2, 8))


def test_attention_loss_allows_other_channel_counts_and_pools_to_the_teacher_size():
    teacher = torch.randn(2, 8, 4, 4)
    same_energy = teacher.pow(2).mean(1, keepdim=True).sqrt().expand(2, 3, 4, 4)  # 3 channels, same map
    assert attention_loss(same_energy, teacher).item() < 1e-10
    upsampled = teacher.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)  # (2, 8, 8, 8)
    assert attention_loss(upsampled, teacher).item() < 1e-10
    assert attention_loss(torch.randn(2, 8, 4, 4), teacher).item() > 1e-4
