"""The reference models by name, each with the data set it is trained on and how it is trained."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from types import MappingProxyType
from typing import Any

from torch import nn

from ..errors import ModelLoadError
from .mobilenetv2 import MobileNetV2Small
from .resnet import ResNetSmall
from .simple_cnns import DigitsCNN, Mnist1dCNN
from .transformer import TinyTransformer


@dataclass(frozen=True)
class ModelInfo:
    """A reference model: its factory, the builtin data set it learns, and its training settings (for
    ``training.fit``); the settings are part of the weights' cache key."""

    name: str
    factory: Callable[..., nn.Module]
    dataset: str
    description: str
    epochs: int
    lr: float
    batch_size: int
    weight_decay: float = 0.0
    schedule: str = "cosine"
    seed: int = 0

    def training_settings(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "epochs": self.epochs, "lr": self.lr, "batch_size": self.batch_size,
                "weight_decay": self.weight_decay, "schedule": self.schedule, "seed": self.seed}


# Settings measured on a 2-core CPU (test accuracy, training time): see each entry.
REFERENCE_MODELS: Mapping[str, ModelInfo] = MappingProxyType({info.name: info for info in (
    ModelInfo("mnist1d_cnn", Mnist1dCNN, "builtin:mnist1d",  # 94.8 %, 20 s (paper: 94 %)
              "the MNIST-1D paper's ConvBase: three strided Conv1d-ReLU and a Linear (5k parameters)",
              epochs=60, lr=2e-2, batch_size=50, weight_decay=0.05),
    ModelInfo("digits_cnn", DigitsCNN, "builtin:digits",  # 99.4 %, 6 s
              "three 3x3 Conv2d-BN-ReLU with a max pool, global average pool, Linear (24k parameters)",
              epochs=30, lr=1e-2, batch_size=64, weight_decay=0.01),
    ModelInfo("mobilenetv2_mnist1d", partial(MobileNetV2Small, 1, input_size=40), "builtin:mnist1d",  # 98.1 %, 80 s
              "MobileNetV2 in 1-D: 11 inverted residual blocks with depthwise convolutions (387k parameters)",
              epochs=15, lr=1e-2, batch_size=128, weight_decay=0.01),
    ModelInfo("mobilenetv2_digits", partial(MobileNetV2Small, 2, input_size=8), "builtin:digits",  # 98.3 %, 50 s
              "MobileNetV2 for 8x8 images: 11 inverted residual blocks with depthwise convolutions (404k parameters)",
              epochs=20, lr=1e-2, batch_size=64, weight_decay=0.01),
    ModelInfo("resnet_mnist1d", partial(ResNetSmall, 1, input_size=40), "builtin:mnist1d",  # 99.3 %, 40 s
              "ResNet in 1-D: 2 basic blocks in each of three stages of 32, 64, 128 channels (241k parameters)",
              epochs=20, lr=1e-2, batch_size=128, weight_decay=0.01),
    ModelInfo("resnet_digits", partial(ResNetSmall, 2, input_size=8, blocks_per_stage=(1, 1, 1)),  # 98.9 %, 16 s
              "builtin:digits",
              "ResNet for 8x8 images: 1 basic block in each of three stages of 32, 64, 128 channels (308k parameters)",
              epochs=30, lr=5e-3, batch_size=64, weight_decay=0.01),
    ModelInfo("transformer_mnist1d", TinyTransformer, "builtin:mnist1d",  # 89.7 %, 50 s: it overfits 4,000 samples
              "a 2-block pre-LayerNorm transformer over 10 patches, attention written out op by op (69k parameters)",
              epochs=60, lr=1e-3, batch_size=64, weight_decay=0.05),
)})


def build_model(name: str, **kwargs: Any) -> nn.Module:
    """A freshly initialised reference model; ``kwargs`` go to its constructor."""
    info = model_info(name)
    try:
        return info.factory(**kwargs)
    except TypeError as e:
        raise ModelLoadError(f"cannot build {name!r} with {kwargs}: {e}") from None


def model_info(name: str) -> ModelInfo:
    if name not in REFERENCE_MODELS:
        raise ModelLoadError(f"unknown reference model {name!r}; available: {', '.join(REFERENCE_MODELS)}")
    return REFERENCE_MODELS[name]
