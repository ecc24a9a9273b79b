"""Run-time configuration of knowledge distillation (D1–D3): the response loss, and the feature and attention
pairs. Frozen and validated at construction; the run-time state lives in ``Distiller``."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..errors import RecipeError
from ..layers import validate_patterns

FEATURE_LOSSES = ("mse", "normalized")
FEATURE_LAYOUTS = ("auto", "channels_first", "channels_last")

Pair = tuple[str, str]


@dataclass(frozen=True)
class DistillConfig:
    """Knowledge distillation from a frozen teacher.

    Response KD (Hinton et al., 2015): ``alpha`` · T² · KL(teacher ‖ student at temperature T) + ``beta`` ·
    cross-entropy on the labels; ``beta`` defaults to 1 − alpha. Without labels only the soft term is used.

    ``feature_pairs``: (student_layer, teacher_layer) pairs, each an exact module name or ``re:<regex>``; a
    regex pair matches the same number of modules on both sides, paired in module order. Features whose
    shapes differ go through a learned adaptation layer (FitNets: 1×1 conv on channel-first maps, Linear on
    vectors and tokens; adaptive average pooling to the teacher's length / size). ``feature_loss``: "mse" or
    "normalized" (squared distance of the per-sample L2-normalised features, 2 − 2·cosine).
    ``feature_layout``: how 3-D features are read — "channels_first" (B, C, L) as after a Conv1d,
    "channels_last" (B, T, D) as in a transformer, or "auto" (channels last when the layer is, or ends in, a
    Linear / LayerNorm; see ``distiller.feature_layout``).

    ``attention_pairs``: attention transfer (Zagoruyko & Komodakis, 2017) at these pairs: maps are the
    L2-normalised channel mean of |feature|^``attention_p``; the loss is the mean squared difference of the
    maps, times ``attention_weight`` (default β/2 with the paper's β = 1000, because the maps are unit vectors
    and their squared differences are small). Channels may differ; sizes are pooled to the teacher's.

    ``epochs`` and ``learning_rate`` are for the loop that trains the student (the caller's / pipeline's)."""

    temperature: float = 4.0
    alpha: float = 0.5
    beta: float | None = None
    feature_pairs: tuple[Pair, ...] = field(default_factory=tuple)
    feature_weight: float = 1.0
    feature_loss: str = "mse"
    feature_layout: str = "auto"
    attention_pairs: tuple[Pair, ...] = field(default_factory=tuple)
    attention_weight: float = 500.0
    attention_p: float = 2.0
    epochs: int = 10
    learning_rate: float = 1e-3

    def __post_init__(self) -> None:
        check_number("temperature", self.temperature, minimum=0.0, inclusive=False)
        check_number("alpha", self.alpha, minimum=0.0, maximum=1.0)
        if self.beta is not None:
            check_number("beta", self.beta, minimum=0.0)
        check_number("feature_weight", self.feature_weight, minimum=0.0)
        check_number("attention_weight", self.attention_weight, minimum=0.0)
        check_number("attention_p", self.attention_p, minimum=0.0, inclusive=False)
        check_number("learning_rate", self.learning_rate, minimum=0.0, inclusive=False)
        if isinstance(self.epochs, bool) or not isinstance(self.epochs, int) or self.epochs < 0:
            raise RecipeError(f"epochs must be an integer >= 0, got {self.epochs!r}")
        if self.feature_loss not in FEATURE_LOSSES:
            raise RecipeError(f"feature_loss {self.feature_loss!r} is not allowed; allowed: "
                              f"{', '.join(FEATURE_LOSSES)}")
        if self.feature_layout not in FEATURE_LAYOUTS:
            raise RecipeError(f"feature_layout {self.feature_layout!r} is not allowed; allowed: "
                              f"{', '.join(FEATURE_LAYOUTS)}")
        object.__setattr__(self, "feature_pairs", _pairs("feature_pairs", self.feature_pairs))
        object.__setattr__(self, "attention_pairs", _pairs("attention_pairs", self.attention_pairs))

    @property
    def hard_weight(self) -> float:
        """The weight of the cross-entropy on labels: ``beta``, or 1 − alpha when not given."""
        return 1.0 - self.alpha if self.beta is None else self.beta


def check_number(name: str, value: object, *, minimum: float, maximum: float | None = None,
                  inclusive: bool = True) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value >= minimum if inclusive else value > minimum) and (maximum is None or value <= maximum)
    if not ok:
        low = f"{'>=' if inclusive else '>'} {minimum:g}"
        allowed = f"a number {low}" + ("" if maximum is None else f" and <= {maximum:g}")
        raise RecipeError(f"{name} must be {allowed}, got {value!r}")


def _pairs(name: str, pairs: object) -> tuple[Pair, ...]:
    """Lists (from YAML) become tuples; each pair is two layer names or ``re:`` patterns that compile."""
    if isinstance(pairs, (str, bytes)) or not isinstance(pairs, (list, tuple)):
        raise RecipeError(f"{name} must be a list of (student_layer, teacher_layer) pairs, got {pairs!r}")
    out = []
    for i, pair in enumerate(pairs):
        if isinstance(pair, (str, bytes)) or not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise RecipeError(f"{name}[{i}] must be a (student_layer, teacher_layer) pair, got {pair!r}")
        out.append(validate_patterns(pair, where=f"{name}[{i}]"))
    return tuple(out)
