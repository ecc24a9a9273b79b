"""Quantization: observers, BN folding, the quantized representation, post-training quantization."""

from .adaround import AdaRoundSettings, adaround
from .bias_correction import correct_bias
from .config import QuantConfig
from .dynamic import DynamicConfig, quantize_dynamic
from .equalize import EqualizationReport, equalize
from .fold import fold_batchnorm, fold_bn_into
from .graph import convert, prepare
from .modules import ActivationQuantizer, QuantizedLayer
from .observers import (
    EntropyObserver,
    MinMaxObserver,
    MovingAverageMinMaxObserver,
    MSEObserver,
    PercentileObserver,
    make_observer,
)
from .ptq import calibrate, layer_summary, quantize
from .qat import QATConfig, QuantizationAwareTraining
from .smoothing import SmoothingConfig, smooth
from .weight_only import QuantizedEmbedding, quantize_weights

__all__ = ["quantize_weights", "QuantizedEmbedding", "smooth", "SmoothingConfig",
           "equalize", "EqualizationReport", "correct_bias", "adaround", "AdaRoundSettings",
           "QuantConfig", "DynamicConfig", "quantize_dynamic", "QATConfig", "QuantizationAwareTraining",
           "fold_batchnorm", "fold_bn_into", "prepare", "convert", "calibrate", "quantize",
           "layer_summary", "ActivationQuantizer", "QuantizedLayer", "MinMaxObserver", "PercentileObserver",
           "make_observer", "MovingAverageMinMaxObserver", "MSEObserver", "EntropyObserver"]
