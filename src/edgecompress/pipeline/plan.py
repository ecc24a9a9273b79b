"""Turn a validated recipe into run-time configs and refuse, before any work, what cannot succeed."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..clustering import ClusterConfig
from ..datasets import Dataset
from ..distillation import DistillConfig
from ..errors import DataError, UnsupportedError
from ..export import Exporter, check_supported
from ..lowrank import FactorizeConfig
from ..pruning import PruneConfig
from ..pruning.structured_config import StructuredPruneConfig
from ..quantization import QuantConfig
from ..recipe import QuantizeParams, Recipe


@dataclass(frozen=True)
class PruneStep:
    config: PruneConfig | StructuredPruneConfig  # masks (unstructured, N:M, block) or physical channel removal
    steps: int
    schedule: str
    fine_tune_epochs: int
    learning_rate: float
    name: str = "prune"
    rewind: bool = False  # lottery ticket: rewind surviving weights after each pruning round
    rewind_steps: int = 0


@dataclass(frozen=True)
class DistillStep:
    config: DistillConfig
    width: float
    depth: float | None
    factory: str | None  # module.path:factory of a user student
    assistant_widths: tuple[float, ...] = ()  # progressive: teacher → assistants (these widths) → student
    name: str = "distill"


@dataclass(frozen=True)
class FactorizeStep:
    config: FactorizeConfig
    fine_tune_epochs: int
    learning_rate: float
    name: str = "factorize"


@dataclass(frozen=True)
class ClusterStep:
    config: ClusterConfig
    fine_tune_epochs: int
    learning_rate: float
    name: str = "cluster"


@dataclass(frozen=True)
class FinetuneStep:
    epochs: int
    learning_rate: float
    name: str = "finetune"


@dataclass(frozen=True)
class QuantizeStep:
    """What the quantize stage runs: ``method`` is one of fp16, static (post-training, any bit-width),
    dynamic, qat, mixed; ``config`` is the QuantConfig the method starts from (None for fp16)."""

    method: str
    params: QuantizeParams  # the recipe's keys, for the method-specific ones (qat, mixed, Q8 flags)
    config: QuantConfig | None
    calibration_samples: int
    note: str | None = None
    name: str = "quantize"


Step = DistillStep | PruneStep | FactorizeStep | FinetuneStep | ClusterStep | QuantizeStep


@dataclass(frozen=True)
class Plan:
    steps: tuple[Step, ...]
    scheme: str
    exporter: Exporter
    warnings: tuple[str, ...] = field(default_factory=tuple)


def _distill_step(cfg) -> DistillStep:
    config = DistillConfig(temperature=cfg.temperature, alpha=cfg.alpha, beta=cfg.beta, epochs=cfg.epochs,
                           learning_rate=cfg.learning_rate, feature_pairs=cfg.feature_pairs,
                           feature_weight=cfg.feature_weight, attention_pairs=cfg.attention_pairs,
                           attention_weight=cfg.attention_weight)
    return DistillStep(config, cfg.student_width, cfg.student_depth, cfg.student, tuple(cfg.assistant_widths))


def _prune_step(cfg, seed: int) -> PruneStep:
    steps = cfg.iterations if cfg.iterative else 1
    if cfg.type == "structured":
        config = StructuredPruneConfig(ratio=cfg.sparsity, importance=cfg.importance or "l2", scope=cfg.scope,
                                       ignore=tuple(cfg.ignore), min_channels=cfg.min_channels,
                                       round_to=cfg.round_to, prune_heads=cfg.prune_heads, seed=seed)
        return PruneStep(config, steps, cfg.schedule, cfg.fine_tune_epochs, cfg.learning_rate)
    config = PruneConfig(sparsity=cfg.sparsity, method=cfg.type, scope=cfg.scope, ignore=tuple(cfg.ignore), seed=seed,
                         pattern=cfg.pattern, block=tuple(cfg.block_shape))
    return PruneStep(config, steps, cfg.schedule, cfg.fine_tune_epochs, cfg.learning_rate, rewind=cfg.rewind,
                     rewind_steps=cfg.rewind_steps)


# Recipe type → (weight bits, ternary) for the integer types.
_WEIGHT_TYPES = {"int8": (8, False), "int4": (4, False), "int3": (3, False), "int2": (2, False),
                 "ternary": (2, True), "binary": (1, False), "mixed": (8, False)}
DEFAULT_GROUP_SIZE = 32  # below 8 bits, one scale per 32 input elements (the common INT4 choice)


def scheme_of(cfg: QuantizeParams) -> str:
    """The artifact scheme a quantize stage produces (what the exporter must be able to carry)."""
    return "int8" if cfg.strategy == "dynamic" else cfg.type


def _quantize_step(cfg: QuantizeParams, exporter: Exporter) -> QuantizeStep:
    if cfg.type == "fp32":
        raise UnsupportedError("quantization type 'fp32' quantizes nothing; disable the quantization section "
                               "instead")
    if cfg.type == "fp16":
        if cfg.smoothing:
            raise UnsupportedError("smoothing with type 'fp16' is not available: float16 has no activation "
                                   "quantization to smooth; allowed with int8 and mixed")
        return QuantizeStep("fp16", cfg, None, 0)
    bits, ternary = _WEIGHT_TYPES[cfg.type]
    reduce_range = exporter.saturates_int8_weights() if cfg.reduce_range == "auto" else cfg.reduce_range
    note = None
    if cfg.reduce_range == "auto" and reduce_range and bits == 8:
        note = (f"7-bit weights: {exporter.runtime} on this CPU (x86 without VNNI) saturates the int16 sums "
                "of 8-bit weight products; reduce_range: false forces 8 bits")
    low_bit = bits < 8
    if cfg.strategy == "quantization_aware" and cfg.group_size is not None:
        raise UnsupportedError(f"group_size {cfg.group_size} with strategy 'quantization_aware' is not available: "
                               "QAT learns one scale per output channel; remove group_size")
    grouped = low_bit and cfg.strategy == "post_training"
    if cfg.smoothing and grouped:
        raise UnsupportedError(f"smoothing with type {cfg.type!r} post-training is not available: weight-only "
                               "quantization keeps activations float, so there is nothing to smooth; allowed with "
                               "int8 (post_training, dynamic, quantization_aware) and mixed")
    group_size = cfg.group_size if cfg.group_size is not None else (DEFAULT_GROUP_SIZE if grouped else None)
    config = QuantConfig(observer=cfg.observer, percentile=cfg.percentile, per_channel=cfg.per_channel,
                         activation_dtype=cfg.activation_dtype, fold_batchnorm=cfg.fold_batchnorm,
                         reduce_range=reduce_range, ignore=tuple(cfg.ignore), weight_bits=bits,
                         weight_symmetric=cfg.weight_symmetric, ternary=ternary,
                         group_size=group_size if grouped else None,
                         # low-bit post-training quantization is weight-only (activations stay float);
                         # QAT trains 8-bit activations alongside the low-bit weights
                         weight_only=low_bit and cfg.strategy == "post_training",
                         equalization=cfg.equalization, equalization_relu6=cfg.equalization_relu6,
                         bias_correction=cfg.bias_correction, adaround=cfg.adaround,
                         adaround_iterations=cfg.adaround_iterations, smoothing=cfg.smoothing,
                         smoothing_alpha=None if cfg.smoothing_alpha == "auto" else float(cfg.smoothing_alpha))
    method = {"post_training": "static", "dynamic": "dynamic", "quantization_aware": "qat"}[cfg.strategy]
    if cfg.type == "mixed":
        method = "mixed"
    return QuantizeStep(method, cfg, config, cfg.calibration_samples, note)


# Quantize methods and Q8 refinements this version runs; the recipe schema knows more.
AVAILABLE_METHODS = ("fp16", "static", "mixed", "dynamic", "qat")
AVAILABLE_REFINEMENTS: tuple[str, ...] = ("equalization", "bias_correction", "adaround")


def _check_available(step: QuantizeStep) -> None:
    if step.method not in AVAILABLE_METHODS:
        raise UnsupportedError(f"quantization {step.params.type!r} with strategy {step.params.strategy!r} "
                               f"({step.method}) is not available in this version; available: "
                               f"{', '.join(AVAILABLE_METHODS)}")
    asked = [k for k in ("equalization", "bias_correction", "adaround") if getattr(step.params, k)]
    missing = [k for k in asked if k not in AVAILABLE_REFINEMENTS]
    if missing:
        raise UnsupportedError(f"{', '.join(missing)} not available in this version; available: "
                               f"{', '.join(AVAILABLE_REFINEMENTS) or 'none'}")


def make_plan(recipe: Recipe, dataset: Dataset) -> Plan:
    warnings = list(recipe.lint())
    quantize = recipe.stage("quantize")
    scheme = "fp32" if quantize is None else scheme_of(quantize.config)
    exporter = check_supported(recipe.output.format, scheme)
    steps: list[Step] = []
    for stage in recipe.stages:
        if stage.kind == "distill":
            steps.append(_distill_step(stage.config))
        elif stage.kind == "prune":
            steps.append(_prune_step(stage.config, recipe.training.seed))
        elif stage.kind == "factorize":
            cfg = stage.config
            config = FactorizeConfig(method=cfg.method, rank_ratio=cfg.rank_ratio, energy=cfg.energy,
                                     param_ratio=cfg.param_ratio, min_rank=cfg.min_rank, ignore=tuple(cfg.ignore))
            steps.append(FactorizeStep(config, cfg.fine_tune_epochs, cfg.learning_rate))
        elif stage.kind == "cluster":
            cfg = stage.config
            config = ClusterConfig(bits=cfg.bits, clusters=cfg.clusters, per_channel=cfg.per_channel, init=cfg.init,
                                   iterations=cfg.iterations, ignore=tuple(cfg.ignore), seed=recipe.training.seed)
            steps.append(ClusterStep(config, cfg.fine_tune_epochs, cfg.learning_rate))
        elif stage.kind == "finetune":
            steps.append(FinetuneStep(stage.config.epochs, stage.config.learning_rate))
        elif stage.kind == "quantize":
            steps.append(_quantize_step(stage.config, exporter))
            _check_available(steps[-1])
        else:
            raise UnsupportedError(f"the {stage.kind!r} stage is not available in this version; available "
                                   "stages: distill, prune, factorize, finetune, cluster, quantize")
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
