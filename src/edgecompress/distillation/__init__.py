"""Knowledge distillation (D1–D5): the losses, the Distiller lifecycle with its verbs, and student construction.

    student = make_student(teacher, width=0.5)
    with Distiller(teacher, student, DistillConfig(temperature=4, alpha=0.9)) as distiller:
        fit(distiller.model, dataset, epochs=20, loss_fn=distiller.loss_fn)
        student = distiller.finalize()
"""

from .config import FEATURE_LAYOUTS, FEATURE_LOSSES, DistillConfig
from .distiller import (
    DistillationModule,
    Distiller,
    TokenPool,
    distill,
    distill_progressive,
    feature_layout,
    make_adapter,
)
from .losses import attention_loss, attention_map, feature_loss, kd_loss
from .students import check_student, make_student

__all__ = ["DistillConfig", "FEATURE_LOSSES", "FEATURE_LAYOUTS", "Distiller", "DistillationModule", "TokenPool",
           "distill", "distill_progressive", "feature_layout", "make_adapter", "kd_loss", "feature_loss",
           "attention_map", "attention_loss", "make_student", "check_student"]
