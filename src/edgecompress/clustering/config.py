"""Run-time configuration of weight clustering (weight sharing, L3)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import RecipeError
from ..layers import validate_patterns
from .kmeans import INITS

DEFAULT_BITS = 4


@dataclass(frozen=True)
class ClusterConfig:
    """k-means weight sharing of conv/linear weights (biases stay as they are).

    bits: 1..8, for 2**bits centroids; or clusters: 2..256 centroids. Give at most one of the two; with
    neither, 2**4 = 16 centroids. per_channel: one codebook per output channel (dim 0 of the weight) instead
    of one per layer. init: "kmeans++" (D² sampling), "linear" (evenly spaced between the layer's min and max,
    TF-MOT's default) or "density" (evenly spaced quantiles). iterations: at most this many Lloyd steps.

    Exact zeros are kept: a codebook whose weights contain 0.0 (pruned weights) reserves one of its centroids
    for 0, fixed at 0 while fine-tuning, and only the nonzero weights share the others; so clustering after
    pruning keeps the sparsity exactly.
    """

    bits: int | None = None
    clusters: int | None = None
    per_channel: bool = False
    init: str = "kmeans++"
    iterations: int = 30
    ignore: tuple[str, ...] = field(default_factory=tuple)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.bits is not None and self.clusters is not None:
            raise RecipeError(f"give bits or clusters, not both; got bits={self.bits} and clusters={self.clusters}")
        if self.bits is not None and not (_is_int(self.bits) and 1 <= self.bits <= 8):
            raise RecipeError(f"bits {self.bits!r} is not allowed; allowed: a whole number from 1 to 8 "
                              "(2**bits centroids)")
        if self.clusters is not None and not (_is_int(self.clusters) and 2 <= self.clusters <= 256):
            raise RecipeError(f"clusters {self.clusters!r} is not allowed; allowed: a whole number from 2 to 256")
        if not isinstance(self.per_channel, bool):
            raise RecipeError(f"per_channel {self.per_channel!r} is not allowed; allowed: true or false")
        if self.init not in INITS:
            raise RecipeError(f"init {self.init!r} is not allowed; allowed: {', '.join(INITS)}")
        if not (_is_int(self.iterations) and 1 <= self.iterations <= 10_000):
            raise RecipeError(f"iterations {self.iterations!r} is not allowed; allowed: a whole number from 1 to "
                              "10000")
        if not _is_int(self.seed):
            raise RecipeError(f"seed {self.seed!r} is not allowed; allowed: a whole number")
        object.__setattr__(self, "ignore", validate_patterns(self.ignore))

    @property
    def num_clusters(self) -> int:
        """Centroids per codebook (a reserved zero, when there is one, is one of them)."""
        if self.clusters is not None:
            return self.clusters
        return 2 ** (self.bits if self.bits is not None else DEFAULT_BITS)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
