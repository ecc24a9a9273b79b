"""Run-time configuration of unstructured pruning."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import RecipeError, UnsupportedError
from ..layers import validate_patterns

METHODS = ("magnitude", "gradient", "random")
SCOPES = ("global", "layer")


@dataclass(frozen=True)
class PruneConfig:
    """Unstructured pruning of conv/linear weights to ``sparsity``.

    method: magnitude (|w|), gradient (first-order Taylor |w·∂L/∂w|, needs labelled data) or random.
    scope: one threshold over all layers (global) or the same sparsity in every layer (layer).
    """

    sparsity: float = 0.5
    method: str = "magnitude"
    scope: str = "global"
    ignore: tuple[str, ...] = field(default_factory=tuple)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.method == "structured":
            raise UnsupportedError("structured (channel) pruning is not available in this version; "
                                   f"available methods: {', '.join(METHODS)}")
        if self.method not in METHODS:
            raise RecipeError(f"pruning method {self.method!r} is not allowed; allowed: {', '.join(METHODS)}")
        if self.scope not in SCOPES:
            raise RecipeError(f"pruning scope {self.scope!r} is not allowed; allowed: {', '.join(SCOPES)}")
        if not 0.0 <= self.sparsity < 1.0:
            raise RecipeError(f"sparsity {self.sparsity} is out of range; allowed: 0 <= sparsity < 1")
        object.__setattr__(self, "ignore", validate_patterns(self.ignore))
