"""Reference models for the demo, the tests and the benchmarks; each has ``example_inputs()`` and traces
with torch.fx, torch.export and the ONNX exporter."""

from .mobilenetv2 import InvertedResidual, MobileNetV2Small
from .pretrained import pretrained, pretrained_accuracy, weights_path
from .registry import REFERENCE_MODELS, ModelInfo, build_model, model_info
from .resnet import BasicBlock, ResNetSmall
from .simple_cnns import DigitsCNN, Mnist1dCNN
from .transformer import TinyTransformer

__all__ = ["build_model", "model_info", "pretrained", "pretrained_accuracy", "weights_path", "REFERENCE_MODELS",
           "ModelInfo", "Mnist1dCNN", "DigitsCNN", "MobileNetV2Small", "InvertedResidual", "ResNetSmall",
           "BasicBlock", "TinyTransformer"]
