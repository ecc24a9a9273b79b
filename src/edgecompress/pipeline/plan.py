"""Turn a validated recipe into run-time configs and refuse, before any work, what cannot succeed."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..datasets import Dataset
from ..errors import DataError, UnsupportedError
from ..export import Exporter, check_supported
from ..pruning import PruneConfig
from ..quantization import QuantConfig
from ..recipe import Recipe


@dataclass(frozen=True)
class PruneStep:
    config: PruneConfig
    steps: int
    schedule: str
    fine_tune_epochs: int
    learning_rate: float
    name: str = "prune"


@dataclass(frozen=True)
class FinetuneStep:
    epochs: int
    learning_rate: float
    name: str = "finetune"


@dataclass(frozen=True)
class QuantizeStep:
    config: QuantConfig
    calibration_samples: int
    note: str | None = None
    name: str = "quantize"


Step = PruneStep | FinetuneStep | QuantizeStep


@dataclass(frozen=True)
class Plan:
    steps: tuple[Step, ...]
    scheme: str
    exporter: Exporter
    warnings: tuple[str, ...] = field(default_factory=tuple)


def _prune_step(cfg, seed: int) -> PruneStep:
    config = PruneConfig(sparsity=cfg.sparsity, method=cfg.type, scope=cfg.scope, ignore=tuple(cfg.ignore),
                         seed=seed)
    steps = cfg.iterations if cfg.iterative else 1
    return PruneStep(config, steps, cfg.schedule, cfg.fine_tune_epochs, cfg.learning_rate)


def _quantize_step(cfg, exporter: Exporter) -> QuantizeStep:
    if cfg.type == "fp32":
        raise UnsupportedError("quantization type 'fp32' quantizes nothing; disable the quantization section "
                               "instead")
    if cfg.type != "int8" or cfg.strategy != "post_training":
        raise UnsupportedError(
            f"quantization type {cfg.type!r} with strategy {cfg.strategy!r} is not available in this version; "
            "available: type 'int8' with strategy 'post_training'")
    reduce_range = exporter.saturates_int8_weights() if cfg.reduce_range == "auto" else cfg.reduce_range
    config = QuantConfig(observer=cfg.observer, percentile=cfg.percentile, per_channel=cfg.per_channel,
                         activation_dtype=cfg.activation_dtype, fold_batchnorm=cfg.fold_batchnorm,
                         reduce_range=reduce_range, ignore=tuple(cfg.ignore))
    note = None
    if cfg.reduce_range == "auto" and reduce_range:
        note = (f"7-bit weights: {exporter.runtime} on this CPU (x86 without VNNI) saturates the int16 sums "
                "of 8-bit weight products; reduce_range: false forces 8 bits")
    return QuantizeStep(config, cfg.calibration_samples, note)


def make_plan(recipe: Recipe, dataset: Dataset) -> Plan:
    warnings = list(recipe.lint())
    quantizes = any(stage.kind == "quantize" for stage in recipe.stages)
    exporter = check_supported(recipe.output.format, "int8" if quantizes else "fp32")
    steps: list[Step] = []
    for stage in recipe.stages:
        if stage.kind == "prune":
            steps.append(_prune_step(stage.config, recipe.training.seed))
        elif stage.kind == "finetune":
            steps.append(FinetuneStep(stage.config.epochs, stage.config.learning_rate))
        elif stage.kind == "quantize":
            steps.append(_quantize_step(stage.config, exporter))
        else:
            raise UnsupportedError(f"the {stage.kind!r} stage is not available in this version; available "
                                   "stages: prune, finetune, quantize")
    scheme = "int8" if quantizes else "fp32"
    for step in steps:
        if isinstance(step, QuantizeStep) and step.calibration_samples > dataset.x_train.shape[0]:
            warnings.append(f"calibration_samples is {step.calibration_samples} but the data has only "
                            f"{dataset.x_train.shape[0]} training samples; calibrating on all of them")
    if not dataset.labelled and any(isinstance(s, (PruneStep, FinetuneStep)) for s in steps):
        warnings.append("the data has no labels: fine-tuning distils from the original model instead, and "
                        "quality is reported as fidelity to the original")
    if dataset.x_test.shape[0] < 10:
        raise DataError(f"evaluation needs at least 10 test samples, got {dataset.x_test.shape[0]}")
    return Plan(tuple(steps), scheme, exporter, tuple(warnings))
