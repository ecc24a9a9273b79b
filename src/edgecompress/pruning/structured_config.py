"""Run-time configuration of structured (channel) pruning."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import RecipeError
from ..layers import validate_patterns

IMPORTANCES = ("l1", "l2", "geometric_median", "bn_scale", "taylor", "random")
SCOPES = ("global", "layer")


@dataclass(frozen=True)
class StructuredPruneConfig:
    """Remove ``ratio`` of the channels (filters, hidden units, attention heads) and shrink the layers.

    importance: group L1 / L2 norm of the weights of every layer a channel touches, geometric median (FPGM: the
      channels closest to the others are the most replaceable), bn_scale (|γ| of the batch norms in the group;
      groups without one are left whole), taylor (|w·∂L/∂w|, needs labelled data) or random.
    scope: rank all channels of the model together (global: layers that matter less lose more) or remove the same
      fraction from every group of coupled layers (layer).
    ignore: layers (exact names or ``re:`` patterns; a module inside an ignored parent is ignored) kept whole —
      neither their inputs nor their outputs shrink. The layers producing the model's outputs are always kept.
    min_channels: no layer keeps fewer channels than this (or than it had); never fewer than one, nor fewer than
      one attention head.
    round_to: the channels a group keeps are rounded up to a multiple of this (vector widths of the target).
    prune_heads: in attention, remove whole heads (head size kept) rather than the same dimensions of every head.
    """

    ratio: float = 0.5
    importance: str = "l1"
    scope: str = "layer"
    ignore: tuple[str, ...] = field(default_factory=tuple)
    min_channels: int = 1
    round_to: int = 1
    prune_heads: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.ratio, bool) or not isinstance(self.ratio, (int, float)) or not 0.0 <= self.ratio < 1.0:
            raise RecipeError(f"structured pruning ratio {self.ratio!r} is out of range; allowed: 0 <= ratio < 1")
        if self.importance not in IMPORTANCES:
            raise RecipeError(f"structured pruning importance {self.importance!r} is not allowed; "
                              f"allowed: {', '.join(IMPORTANCES)}")
        if self.scope not in SCOPES:
            raise RecipeError(f"structured pruning scope {self.scope!r} is not allowed; allowed: {', '.join(SCOPES)}")
        for key in ("min_channels", "round_to"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise RecipeError(f"structured pruning {key} {value!r} is not allowed; allowed: an integer >= 1")
        if not isinstance(self.prune_heads, bool):
            raise RecipeError(f"structured pruning prune_heads {self.prune_heads!r} is not allowed; "
                              "allowed: true, false")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise RecipeError(f"structured pruning seed {self.seed!r} is not allowed; allowed: an integer")
        if isinstance(self.ignore, str):
            raise RecipeError(f"ignore: {self.ignore!r} must be a list of layer names or 're:<regex>' patterns")
        object.__setattr__(self, "ignore", validate_patterns(self.ignore))
