"""The distillation losses (D1–D3) as plain functions of tensors: response KD, feature matching and attention
transfer. Teacher tensors are detached here, so gradients reach only the student whatever the caller does."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import DataError, UnsupportedError
from .config import FEATURE_LOSSES, check_number


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor | None, *,
            temperature: float, alpha: float, beta: float | None = None) -> torch.Tensor:
    """alpha · T² · KL(softmax(t/T) ‖ softmax(s/T)) + beta · CE(s, labels), KL averaged over the batch.

    The T² factor (Hinton et al., 2015) keeps the soft term's gradients the same size whatever T, since they
    scale as 1/T². ``beta`` defaults to 1 − alpha; with ``labels=None`` only the soft term is returned."""
    check_number("temperature", temperature, minimum=0.0, inclusive=False)
    check_number("alpha", alpha, minimum=0.0, maximum=1.0)
    if beta is not None:
        check_number("beta", beta, minimum=0.0)
    if student_logits.dim() != 2 or student_logits.shape != teacher_logits.shape:
        raise DataError(f"kd_loss needs student and teacher logits of the same (batch, classes) shape, got "
                        f"{tuple(student_logits.shape)} and {tuple(teacher_logits.shape)}")
    beta = 1.0 - alpha if beta is None else beta
    soft_student = F.log_softmax(student_logits / temperature, dim=-1)
    soft_teacher = F.log_softmax(teacher_logits.detach() / temperature, dim=-1)
    loss = alpha * temperature ** 2 * F.kl_div(soft_student, soft_teacher, reduction="batchmean", log_target=True)
    if labels is not None and beta > 0:
        if labels.shape != student_logits.shape[:1]:
            raise DataError(f"kd_loss needs one label per sample: logits {tuple(student_logits.shape)}, labels "
                            f"{tuple(labels.shape)}")
        loss = loss + beta * F.cross_entropy(student_logits, labels)
    return loss


def feature_loss(student: torch.Tensor, teacher: torch.Tensor, *, kind: str = "mse") -> torch.Tensor:
    """Distance between an (adapted) student feature and the teacher's, of the same shape: "mse" (mean over
    all elements) or "normalized" (per-sample L2-normalised flattened features, squared distance averaged
    over the batch: 2 − 2·cosine, in [0, 4])."""
    if kind not in FEATURE_LOSSES:
        raise UnsupportedError(f"feature loss {kind!r} is not supported; allowed: {', '.join(FEATURE_LOSSES)}")
    if student.shape != teacher.shape:
        raise DataError(f"feature loss needs features of the same shape, got student {tuple(student.shape)} "
                        f"and teacher {tuple(teacher.shape)}")
    teacher = teacher.detach()
    if kind == "mse":
        return F.mse_loss(student, teacher)
    s = F.normalize(student.flatten(1), dim=1)
    t = F.normalize(teacher.flatten(1), dim=1)
    return (s - t).pow(2).sum(dim=1).mean()


def attention_map(feature: torch.Tensor, *, p: float = 2.0, channels_last: bool = False,
                  size: tuple[int, ...] | None = None) -> torch.Tensor:
    """Zagoruyko & Komodakis's activation-based attention: the mean over channels of |feature|^p, pooled
    (adaptive average) to ``size`` when given, flattened and L2-normalised per sample → (B, positions).
    ``feature`` is (B, C, *spatial), or (B, T, D) with ``channels_last``."""
    if feature.dim() < 3:
        raise UnsupportedError(f"attention transfer needs features with positions, (B, C, L), (B, C, H, W) or "
                               f"(B, T, D); got shape {tuple(feature.shape)}")
    if channels_last:
        if feature.dim() != 3:
            raise UnsupportedError(f"channels-last attention maps take (B, T, D) features, got "
                                   f"{tuple(feature.shape)}")
        feature = feature.transpose(1, 2)
    spatial = feature.dim() - 2
    if spatial > 2:
        raise UnsupportedError(f"attention maps cover 1-D and 2-D features, got {spatial} spatial dimensions "
                               f"in {tuple(feature.shape)}")
    att = feature.abs().pow(p).mean(dim=1, keepdim=True)
    if size is not None and tuple(att.shape[2:]) != tuple(size):
        pool = F.adaptive_avg_pool1d if spatial == 1 else F.adaptive_avg_pool2d
        att = pool(att, size)
    return F.normalize(att.flatten(1), dim=1)


def attention_loss(student: torch.Tensor, teacher: torch.Tensor, *, p: float = 2.0,
                   channels_last: bool = False) -> torch.Tensor:
    """Mean squared difference of the attention maps (the reference implementation's form); the student's
    map is pooled to the teacher's positions when they differ. Channel counts may differ."""
    if student.shape[0] != teacher.shape[0] or student.dim() != teacher.dim():
        raise DataError(f"attention transfer pairs features of the same batch and rank, got student "
                        f"{tuple(student.shape)} and teacher {tuple(teacher.shape)}")
    t_map = attention_map(teacher.detach(), p=p, channels_last=channels_last)
    positions = tuple(teacher.shape[1:2]) if channels_last else tuple(teacher.shape[2:])
    s_map = attention_map(student, p=p, channels_last=channels_last, size=positions)
    return (s_map - t_map).pow(2).mean()
