"""Run-time configuration of unstructured and pattern (N:M, block) pruning."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import RecipeError
from ..layers import validate_patterns
from .patterns import parse_n_m

METHODS = ("magnitude", "gradient", "random")
SCOPES = ("global", "layer")
PATTERNS = ("unstructured", "block", "N:M (e.g. 2:4)")


@dataclass(frozen=True)
class PruneConfig:
    """Unstructured pruning of conv/linear weights to ``sparsity``.

    method: magnitude (|w|), gradient (first-order Taylor |w·∂L/∂w|, needs labelled data) or random.
    scope: one threshold over all layers (global) or the same sparsity in every layer (layer).
    pattern: "unstructured" (any weight), "N:M" (at most N of every M consecutive weights along the reduction
    dimension survive; ``sparsity`` must be 1 − N/M) or "block" (whole ``block`` = (rows, cols) tiles).
    """

    sparsity: float = 0.5
    method: str = "magnitude"
    scope: str = "global"
    ignore: tuple[str, ...] = field(default_factory=tuple)
    seed: int = 0
    pattern: str = "unstructured"
    block: tuple[int, int] = (1, 4)

    def __post_init__(self) -> None:
        if self.method == "structured":
            raise RecipeError("structured (channel) pruning has its own config: StructuredPruneConfig / "
                              f"prune_structured; PruneConfig methods: {', '.join(METHODS)}")
        if self.method not in METHODS:
            raise RecipeError(f"pruning method {self.method!r} is not allowed; allowed: {', '.join(METHODS)}")
        if self.scope not in SCOPES:
            raise RecipeError(f"pruning scope {self.scope!r} is not allowed; allowed: {', '.join(SCOPES)}")
        if not 0.0 <= self.sparsity < 1.0:
            raise RecipeError(f"sparsity {self.sparsity} is out of range; allowed: 0 <= sparsity < 1")
        object.__setattr__(self, "ignore", validate_patterns(self.ignore))
        n_m = parse_n_m(self.pattern)
        if n_m is None and self.pattern not in ("unstructured", "block"):
            raise RecipeError(f"sparsity pattern {self.pattern!r} is not allowed; allowed: {', '.join(PATTERNS)}")
        if n_m is not None and abs(self.sparsity - (1 - n_m[0] / n_m[1])) > 1e-9:
            raise RecipeError(f"pattern {self.pattern} keeps {n_m[0]} of every {n_m[1]} weights, sparsity "
                              f"{1 - n_m[0] / n_m[1]:g}; got sparsity {self.sparsity:g}")
        if len(self.block) != 2 or min(self.block) < 1:
            raise RecipeError(f"block {self.block!r} is not allowed; allowed: (rows, cols) of whole numbers >= 1")
