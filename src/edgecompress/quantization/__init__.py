"""Quantization: observers, BN folding, the quantized representation, post-training quantization."""

from .config import QuantConfig
from .fold import fold_batchnorm, fold_bn_into
from .graph import convert, prepare
from .modules import ActivationQuantizer, QuantizedLayer
from .observers import MinMaxObserver, PercentileObserver, make_observer
from .ptq import calibrate, layer_summary, quantize

__all__ = ["QuantConfig", "fold_batchnorm", "fold_bn_into", "prepare", "convert", "calibrate", "quantize",
           "layer_summary", "ActivationQuantizer", "QuantizedLayer", "MinMaxObserver", "PercentileObserver",
           "make_observer"]
