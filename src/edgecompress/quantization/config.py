"""The run-time configuration of post-training quantization (the recipe section maps onto it)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import RecipeError
from ..layers import validate_patterns

OBSERVERS = ("minmax", "percentile")
ACTIVATION_DTYPES = ("uint8", "int8")


@dataclass(frozen=True)
class QuantConfig:
    """Static INT8: per-channel (or per-tensor) symmetric int8 weights, per-tensor asymmetric 8-bit
    activations calibrated by ``observer``. uint8 activations are the default because ONNX Runtime on
    x86 without VNNI is fast only for uint8 activations × int8 weights. ``reduce_range`` keeps weights in
    7 bits (±63) so that those kernels' int16 pair sums cannot saturate (see qparams.INT8_WEIGHT_REDUCED)."""

    observer: str = "minmax"
    percentile: float = 99.99
    per_channel: bool = True
    activation_dtype: str = "uint8"
    fold_batchnorm: bool = True
    reduce_range: bool = False
    ignore: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if self.observer not in OBSERVERS:
            raise RecipeError(f"observer {self.observer!r} is not allowed; allowed: {', '.join(OBSERVERS)}")
        if self.activation_dtype not in ACTIVATION_DTYPES:
            raise RecipeError(f"activation_dtype {self.activation_dtype!r} is not allowed; "
                              f"allowed: {', '.join(ACTIVATION_DTYPES)}")
        if not 50.0 < self.percentile <= 100.0:
            raise RecipeError(f"percentile {self.percentile} is out of range; allowed: (50, 100]")
        object.__setattr__(self, "ignore", validate_patterns(self.ignore))
