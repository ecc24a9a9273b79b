"""The run-time configuration of post-training quantization (the recipe section maps onto it)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import RecipeError
from ..layers import validate_patterns

OBSERVERS = ("minmax", "moving_average", "percentile", "mse", "entropy")
ACTIVATION_DTYPES = ("uint8", "int8")
WEIGHT_BITS = (1, 2, 3, 4, 8)


@dataclass(frozen=True)
class QuantConfig:
    """Static INT8 by default: per-channel (or per-tensor) symmetric int8 weights, per-tensor asymmetric 8-bit
    activations calibrated by ``observer``. uint8 activations are the default because ONNX Runtime on
    x86 without VNNI is fast only for uint8 activations × int8 weights. ``reduce_range`` keeps weights in
    7 bits (±63) so that those kernels' int16 pair sums cannot saturate (see qparams.INT8_WEIGHT_REDUCED).

    Low-bit weights: ``weight_bits`` below 8, ``group_size`` consecutive input elements per scale;
    ``weight_only`` leaves activations in float (the INT4 weight-only scheme). Runtimes compute low-bit
    layers on dequantized weights (ONNX Runtime and TFLite have no int4 convolution kernels). ``ternary``
    restricts 2-bit weights to {-1, 0, 1}; 1 bit is binary {-1, 1}. ``layer_bits`` gives single layers
    (exact names) another bit-width: mixed precision, where 16 keeps a layer in float."""

    observer: str = "minmax"
    percentile: float = 99.99
    per_channel: bool = True
    activation_dtype: str = "uint8"
    fold_batchnorm: bool = True
    reduce_range: bool = False
    ignore: tuple[str, ...] = field(default_factory=tuple)
    weight_bits: int = 8
    weight_symmetric: bool = True
    ternary: bool = False
    group_size: int | None = None
    weight_only: bool = False
    layer_bits: tuple[tuple[str, int], ...] = field(default_factory=tuple)
    # Q8, accuracy-preserving PTQ: cross-layer equalization before quantizing ("replace" swaps ReLU6 joins for
    # ReLU so that they can be equalized, changing the float model), bias correction, AdaRound.
    equalization: bool = False
    equalization_relu6: str = "keep"
    bias_correction: bool = False
    adaround: bool = False
    adaround_iterations: int = 1000
    # SmoothQuant before quantizing: per-channel factors move activation outliers into the Linear weights;
    # smoothing_alpha None chooses the strength per layer on the calibration data (see smoothing.py)
    smoothing: bool = False
    smoothing_alpha: float | None = None

    def __post_init__(self) -> None:
        if self.observer not in OBSERVERS:
            raise RecipeError(f"observer {self.observer!r} is not allowed; allowed: {', '.join(OBSERVERS)}")
        if self.activation_dtype not in ACTIVATION_DTYPES:
            raise RecipeError(f"activation_dtype {self.activation_dtype!r} is not allowed; "
                              f"allowed: {', '.join(ACTIVATION_DTYPES)}")
        if not 50.0 < self.percentile <= 100.0:
            raise RecipeError(f"percentile {self.percentile} is out of range; allowed: (50, 100]")
        if self.weight_bits not in WEIGHT_BITS:
            raise RecipeError(f"weight_bits {self.weight_bits} is not allowed; allowed: {WEIGHT_BITS}")
        if self.ternary and self.weight_bits != 2:
            raise RecipeError(f"ternary weights are 2-bit codes; weight_bits must be 2, got {self.weight_bits}")
        if self.group_size is not None and self.group_size < 2:
            raise RecipeError(f"group_size must be >= 2 or None, got {self.group_size}")
        if self.equalization_relu6 not in ("keep", "replace"):
            raise RecipeError(f"equalization_relu6 {self.equalization_relu6!r} is not allowed; allowed: keep, replace")
        if self.smoothing_alpha is not None and not 0.0 <= self.smoothing_alpha <= 1.0:
            raise RecipeError(f"smoothing_alpha must be in [0, 1] or None (auto), got {self.smoothing_alpha}")
        if self.adaround_iterations < 1:
            raise RecipeError(f"adaround_iterations must be >= 1, got {self.adaround_iterations}")
        layer_bits = tuple((str(name), int(bits)) for name, bits in dict(self.layer_bits).items())
        for name, bits in layer_bits:
            if bits not in (*WEIGHT_BITS, 16):
                raise RecipeError(f"layer_bits[{name!r}] is {bits}; allowed: {(*WEIGHT_BITS, 16)}")
        object.__setattr__(self, "layer_bits", layer_bits)
        object.__setattr__(self, "ignore", validate_patterns(self.ignore))

    def bits_for(self, layer: str) -> int:
        """The weight bit-width of ``layer``: its ``layer_bits`` entry, else ``weight_bits`` (16: float)."""
        return dict(self.layer_bits).get(layer, self.weight_bits)
