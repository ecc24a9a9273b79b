"""Run-time configuration of low-rank factorization (SVD of Linear / 1×1 convs, Tucker-2 or CP of k×k convs)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..errors import RecipeError
from ..layers import validate_patterns

METHODS = ("auto", "svd", "tucker", "cp")
RANK_RULES = ("rank_ratio", "energy", "param_ratio")


@dataclass(frozen=True)
class FactorizeConfig:
    """Which layers to factorize and how their ranks are chosen.

    method: "svd" (Linear and 1×1 Conv1d/Conv2d), "tucker" (Tucker-2 of k×k Conv1d/Conv2d), "cp" (CP of k×k
    convs) or "auto" (svd for Linear/1×1, tucker for k×k). A layer the method does not cover is left alone and
    reported. Exactly one rank rule:
    rank_ratio: the rank is ceil(rank_ratio × full rank) (per mode for Tucker; for CP, of max(in, out) channels);
    energy: the smallest rank keeping that share of the squared singular values (per mode of the HOSVD for Tucker;
    not defined for CP);
    param_ratio: the largest rank whose factorization has at most that share of the layer's parameters.
    min_rank: no rank goes below it (nor above the full rank). ignore: layer names or ``re:`` patterns.
    A layer is replaced only when its factorization has fewer parameters than the layer; otherwise it is left
    alone and reported as skipped.
    """

    method: str = "auto"
    rank_ratio: float | None = None
    energy: float | None = None
    param_ratio: float | None = None
    min_rank: int = 1
    ignore: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise RecipeError(f"factorization method {self.method!r} is not allowed; allowed: {', '.join(METHODS)}")
        given = [name for name in RANK_RULES if getattr(self, name) is not None]
        if len(given) != 1:
            raise RecipeError(f"give exactly one of {', '.join(RANK_RULES)}; got "
                              f"{', '.join(f'{n}={getattr(self, n)!r}' for n in given) if given else 'none'}")
        value = getattr(self, given[0])
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) \
                or not 0.0 < value <= 1.0:
            raise RecipeError(f"{given[0]} {value!r} is out of range; allowed: a number with 0 < {given[0]} <= 1")
        if self.energy is not None and self.method == "cp":
            raise RecipeError("energy is defined for method svd, tucker and auto (singular values of the weight); "
                              "method 'cp' takes rank_ratio or param_ratio")
        if isinstance(self.min_rank, bool) or not isinstance(self.min_rank, int) or self.min_rank < 1:
            raise RecipeError(f"min_rank {self.min_rank!r} is not allowed; allowed: a whole number >= 1")
        object.__setattr__(self, "ignore", validate_patterns(self.ignore))

    @property
    def rank_rule(self) -> str:
        """The one rank rule given: rank_ratio, energy or param_ratio."""
        return next(name for name in RANK_RULES if getattr(self, name) is not None)
