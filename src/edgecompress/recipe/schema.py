"""The recipe's pydantic models: one parameter model per stage kind, the sections of the original design's
sectioned form (a parameter model plus ``enabled``), and the optimization / output / training sections.

Every model forbids unknown keys and is frozen. Numbers are strict: a boolean or a string is never read as
a number (an int is accepted where a float is expected)."""

from __future__ import annotations

import re
from types import MappingProxyType
from typing import Annotated, Any, Literal

from annotated_types import Ge, Gt, Le, Lt
from pydantic import (
    AfterValidator,
    AllowInfNan,
    BaseModel,
    ConfigDict,
    Strict,
    StrictBool,
    StrictInt,
    StrictStr,
    StringConstraints,
    model_validator,
)
from pydantic_core import PydanticCustomError

from ..devices import target_names

# Devices a recipe may target: the legacy names (edge_mcu, edge_gpu, cloud), then the packaged device profiles.
TARGET_DEVICES: tuple[str, ...] = target_names()

# The safe order of the stages; export is always last and comes from the `output` section.
STAGE_ORDER: tuple[str, ...] = ("search", "distill", "prune", "factorize", "finetune", "cluster", "quantize")
StageKind = Literal["search", "distill", "prune", "factorize", "finetune", "cluster", "quantize"]

Number = Annotated[float, Strict(), AllowInfNan(False)]
PositiveNumber = Annotated[Number, Gt(0)]
Fraction = Annotated[Number, Ge(0), Le(1)]
Count = Annotated[StrictInt, Ge(0)]
PositiveCount = Annotated[StrictInt, Ge(1)]
NonEmptyStr = Annotated[StrictStr, StringConstraints(min_length=1)]


def _check_layer_pattern(value: str) -> str:
    if value.startswith("re:"):
        try:
            re.compile(value[3:])
        except re.error as exc:
            raise PydanticCustomError("bad_regex", "not a valid regular expression ({reason})",
                                      {"reason": str(exc)}) from None
    return value


def _check_sparsity_pattern(value: str) -> str:
    n_m = re.fullmatch(r"(\d+):(\d+)", value)
    if value in ("unstructured", "block") or (n_m and 0 < int(n_m[1]) < int(n_m[2]) <= 32):
        return value
    raise PydanticCustomError("not_allowed", "not an allowed value",
                              {"allowed": ("unstructured", "block", "N:M with 0 < N < M <= 32, e.g. '2:4'")})


def _check_device(value: str) -> str:
    if value not in TARGET_DEVICES:
        raise PydanticCustomError("not_allowed", "not an allowed value", {"allowed": TARGET_DEVICES})
    return value


# A layer name, exact or `re:<regex>` (the regex is checked when the recipe is loaded).
LayerPattern = Annotated[NonEmptyStr, AfterValidator(_check_layer_pattern)]
TargetDevice = Annotated[StrictStr, AfterValidator(_check_device)]
SparsityPattern = Annotated[StrictStr, AfterValidator(_check_sparsity_pattern)]


class FrozenModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- stage parameters (the stages form; the sections add `enabled`) -------------------------------------

class QatParams(FrozenModel):
    """Quantization-aware training (strategy: quantization_aware): fake quantization with learned scales."""

    epochs: PositiveCount = 3
    learning_rate: PositiveNumber = 1e-4
    learn_scales: StrictBool = True  # LSQ: scales are trained with the weights


class MixedParams(FrozenModel):
    """Mixed precision (type: mixed): a bit-width per layer from a per-layer sensitivity analysis, chosen to
    fit a size budget with the least sensitivity."""

    # Budget for the quantized layers' weight bytes, as a fraction of what uniform INT8 would need.
    size_budget: Annotated[Number, Gt(0), Le(4)] = 0.75
    bits: tuple[Literal[2, 4, 8, 16], ...] = (4, 8)  # candidate bit-widths; 16 keeps the layer float
    metric: Literal["sqnr", "loss"] = "sqnr"  # sensitivity: output SQNR drop, or task-loss increase


class QuantizeParams(FrozenModel):
    # int8: static INT8 (weights and activations). fp16: float16 weights and compute. int4 / int3 / int2 /
    # ternary / binary: low-bit weights (weight-only unless trained with quantization_aware). mixed: a
    # bit-width per layer (see `mixed`).
    type: Literal["fp32", "fp16", "int8", "int4", "int3", "int2", "ternary", "binary", "mixed"] = "int8"
    strategy: Literal["post_training", "quantization_aware", "dynamic"] = "post_training"
    calibration_samples: PositiveCount = 100
    per_channel: StrictBool = True
    weight_symmetric: StrictBool = True
    group_size: Annotated[StrictInt, Ge(2)] | None = None  # weights sharing a scale; default 32 below 8 bits
    observer: Literal["minmax", "moving_average", "percentile", "mse", "entropy"] = "minmax"
    percentile: Annotated[Number, Gt(50), Le(100)] = 99.99
    activation_dtype: Literal["uint8", "int8"] = "uint8"
    fold_batchnorm: StrictBool = True
    # 7-bit weights: "auto" uses them exactly when the artifact's runtime would saturate 8-bit ones
    # (ONNX Runtime on x86 without VNNI); true/false force the choice.
    reduce_range: Literal["auto"] | StrictBool = "auto"
    equalization: StrictBool = False  # cross-layer equalization before quantizing (Q8)
    # keep: pairs joined by ReLU6 are left alone (exact); replace: ReLU6 → ReLU so they can be equalized
    equalization_relu6: Literal["keep", "replace"] = "keep"
    bias_correction: StrictBool = False  # correct the bias shift that weight rounding causes (Q8)
    adaround: StrictBool = False  # learn each weight's rounding direction on calibration data (Q8)
    adaround_iterations: PositiveCount = 1000
    # SmoothQuant: move activation outliers of Linear inputs into their weights before quantizing (int8
    # static, dynamic, QAT, mixed); alpha "auto" picks the strength per layer on the calibration data.
    smoothing: StrictBool = False
    smoothing_alpha: Literal["auto"] | Fraction = "auto"
    qat: QatParams = QatParams()
    mixed: MixedParams = MixedParams()
    ignore: tuple[LayerPattern, ...] = ()


class PruneParams(FrozenModel):
    type: Literal["magnitude", "structured", "gradient", "random"] = "magnitude"
    sparsity: Annotated[Number, Ge(0), Lt(1)] = 0.5
    scope: Literal["global", "layer"] = "global"
    iterative: StrictBool = False
    iterations: PositiveCount = 1
    schedule: Literal["linear", "polynomial", "exponential"] = "polynomial"
    fine_tune_epochs: Count = 1  # epochs of fine-tuning after each pruning step
    learning_rate: PositiveNumber = 1e-3
    ignore: tuple[LayerPattern, ...] = ()
    # unstructured: any weight. "N:M" (e.g. "2:4"): at most N of every M consecutive weights along the
    # reduction dimension survive; sparsity then defaults to 1 − N/M. block: whole block_shape tiles.
    pattern: SparsityPattern = "unstructured"
    block_shape: tuple[PositiveCount, PositiveCount] = (1, 4)

    @model_validator(mode="before")
    @classmethod
    def _sparsity_of_the_pattern(cls, data: Any) -> Any:
        """An omitted sparsity with pattern N:M is 1 − N/M (what the pattern means)."""
        if isinstance(data, dict) and "sparsity" not in data and isinstance(data.get("pattern"), str):
            n_m = re.fullmatch(r"(\d+):(\d+)", data["pattern"])
            if n_m and int(n_m[2]) > 0:
                data = {**data, "sparsity": 1 - int(n_m[1]) / int(n_m[2])}
        return data
    # Lottery ticket: after each of the `iterations` rounds of fine-tune → prune, surviving weights go back to
    # their values after `rewind_steps` optimizer steps of the first round; the final ticket is then trained.
    rewind: StrictBool = False
    rewind_steps: Count = 0
    # type structured: `sparsity` is the fraction of channels (filters, hidden units, attention heads) removed;
    # the layers become physically smaller. importance: l1 | l2 | geometric_median | bn_scale | taylor | random.
    importance: Literal["l1", "l2", "geometric_median", "bn_scale", "taylor", "random"] | None = None
    min_channels: PositiveCount = 1  # floor: no layer keeps fewer channels
    round_to: PositiveCount = 1  # kept channels rounded up to a multiple (the target's vector width)
    prune_heads: StrictBool = True  # attention: remove whole heads


LayerPair = tuple[LayerPattern, LayerPattern]


class DistillParams(FrozenModel):
    """Knowledge distillation: the model entering the stage is the teacher (frozen); a student is trained with
    alpha·T²·KL(soft targets) + beta·CE(labels) (beta = 1 − alpha unless given), plus feature and attention
    transfer between named (student, teacher) layer pairs."""

    temperature: PositiveNumber = 4.0
    alpha: Fraction = 0.5
    beta: Fraction | None = None
    epochs: Count = 10
    learning_rate: PositiveNumber = 1e-3
    # The student: the teacher's family with channels × student_width and blocks × student_depth (reference
    # families), or `student: module.path:factory` returning an nn.Module (imported, never unpickled).
    student_width: Annotated[Number, Gt(0), Le(1)] = 0.5
    student_depth: Annotated[Number, Gt(0), Le(1)] | None = None
    student: NonEmptyStr | None = None
    # Progressive distillation: teacher → assistants of these widths (largest first) → student.
    assistant_widths: tuple[Annotated[Number, Gt(0), Le(1)], ...] = ()
    feature_pairs: tuple[LayerPair, ...] = ()  # [student layer, teacher layer]: exact names or re:<regex>
    feature_weight: PositiveNumber = 1.0
    attention_pairs: tuple[LayerPair, ...] = ()
    attention_weight: PositiveNumber = 500.0


class SearchParams(FrozenModel):
    search_method: Literal["darts", "nasnet", "enas"] = "darts"
    search_space: NonEmptyStr = "default"
    num_nodes: PositiveCount = 4
    search_epochs: Count = 50


class FinetuneParams(FrozenModel):
    epochs: PositiveCount = 1
    learning_rate: PositiveNumber = 1e-3


# The finetune stage has no section of its own in the sectioned form; this name matches the others'.
FinetuneSection = FinetuneParams

class FactorizeParams(FrozenModel):
    """Low-rank factorization: SVD of Linear / 1×1 convs, Tucker-2 or CP of k×k convs, then fine-tuning. Exactly
    one rank rule: rank_ratio (share of the full rank), energy (share of the squared singular values kept) or
    param_ratio (share of each layer's parameters). Layers that would not get smaller stay as they are."""

    method: Literal["auto", "svd", "tucker", "cp"] = "auto"
    rank_ratio: Annotated[Number, Gt(0), Le(1)] | None = None
    energy: Annotated[Number, Gt(0), Le(1)] | None = None
    param_ratio: Annotated[Number, Gt(0), Le(1)] | None = None
    min_rank: PositiveCount = 1
    fine_tune_epochs: Count = 3
    learning_rate: PositiveNumber = 1e-3
    ignore: tuple[LayerPattern, ...] = ()


class ClusterParams(FrozenModel):
    """Weight sharing (k-means): each conv/linear weight takes one of 2^bits (or `clusters`) shared values per
    layer (or per output channel), fine-tuned with the values shared; ONNX stores packed indices + codebook."""

    bits: Annotated[StrictInt, Ge(1), Le(8)] | None = None
    clusters: Annotated[StrictInt, Ge(2), Le(256)] | None = None
    per_channel: StrictBool = False
    init: Literal["kmeans++", "linear", "density"] = "kmeans++"
    iterations: PositiveCount = 30
    fine_tune_epochs: Count = 3
    learning_rate: PositiveNumber = 5e-4
    ignore: tuple[LayerPattern, ...] = ()


StageParams = (SearchParams | DistillParams | PruneParams | FactorizeParams | FinetuneParams | ClusterParams
               | QuantizeParams)

PARAMS_BY_KIND: MappingProxyType[str, type[FrozenModel]] = MappingProxyType({
    "search": SearchParams,
    "distill": DistillParams,
    "prune": PruneParams,
    "factorize": FactorizeParams,
    "finetune": FinetuneParams,
    "cluster": ClusterParams,
    "quantize": QuantizeParams,
})


# --- the sectioned form of the original design ----------------------------------------------------------

class QuantizationSection(QuantizeParams):
    enabled: StrictBool = False


class PruningSection(PruneParams):
    enabled: StrictBool = False


class DistillationSection(DistillParams):
    enabled: StrictBool = False


class NasSection(SearchParams):
    enabled: StrictBool = False


class ClusteringSection(ClusterParams):
    enabled: StrictBool = False


class LowRankSection(FactorizeParams):
    enabled: StrictBool = False


# Technique section name -> (its model, the stage kind it becomes).
TECHNIQUE_SECTIONS: MappingProxyType[str, tuple[type[FrozenModel], str]] = MappingProxyType({
    "nas": (NasSection, "search"),
    "distillation": (DistillationSection, "distill"),
    "pruning": (PruningSection, "prune"),
    "lowrank": (LowRankSection, "factorize"),
    "clustering": (ClusteringSection, "cluster"),
    "quantization": (QuantizationSection, "quantize"),
})


# --- sections shared by both forms ----------------------------------------------------------------------

class OptimizationSection(FrozenModel):
    """Targets; None means no target."""

    target_device: TargetDevice = "edge_mcu"
    max_size_mb: PositiveNumber | None = None
    max_latency_ms: PositiveNumber | None = None
    min_accuracy: Fraction | None = None
    target_flops: Annotated[StrictInt, Gt(0)] | None = None


class OutputSection(FrozenModel):
    format: Literal["onnx", "tflite", "torchscript"] = "onnx"
    optimize_for: Literal["latency", "size", "accuracy"] = "latency"
    include_metadata: StrictBool = True


class FineTuneDistillation(FrozenModel):
    """Fine-tuning learns from the original model's soft targets as well as from the labels (KD loss)."""

    temperature: PositiveNumber = 4.0
    alpha: Fraction = 0.5  # weight of the soft loss; the labels get 1 − alpha


class TrainingSection(FrozenModel):
    batch_size: PositiveCount = 128
    seed: Count = 0
    eval_batch_size: PositiveCount = 512
    # Every fine-tuning after pruning, factorization, clustering and QAT distils from the original model.
    distill_fine_tuning: FineTuneDistillation | None = None


class RecipeHeader(FrozenModel):
    """The recipe's own top-level scalars."""

    name: StrictStr | None = None
    description: StrictStr | None = None
    allow_unsafe_order: StrictBool = False
