"""Quantization-aware training (Q6) and its low-bit forms, binary and ternary weights (Q7).

Lifecycle (STYLE.md practice 5): ``QuantizationAwareTraining(model, config, calibration=...)`` builds the
graph ``prepare()`` builds for post-training quantization, calibrates it, then swaps every QuantizedLayer
for a trainable ``QATLayer`` and every ActivationQuantizer for an ``LsqQuantizer`` initialised from the
calibrated ranges; ``.model`` is trained by the caller's loop with ``.step()`` after each optimizer step;
``.finalize()`` writes the learned weights and step sizes back into the original QuantizedLayer /
ActivationQuantizer modules and converts, so the result is the ordinary quantized representation and every
exporter handles it unchanged.

Batch norm after a convolution stays a trainable part of its QATLayer and is folded by ``finalize``. For the
first ``freeze_bn_after`` epochs it normalises with each batch's statistics around a convolution whose
weight is folded with the running statistics and fake-quantized (Krishnamoorthi 2018, §3.2; torch.ao's
ConvBn scheme); once frozen, the layer computes exactly the folded layer the converted model will have.
The default, 0, freezes from the start: training then sees exactly the deployed arithmetic (BN folded
with its running statistics, gamma and beta still trained). Measured on builtin:resnet_mnist1d, ternary,
3 epochs at 1e-3 (float 99.1 %, PTQ 35.1 %): freeze_bn_after=0 → 96.8 %, 2 → 96.0 %, 3 (never frozen) →
60.4 %, because the model learns to rely on batch statistics that the deployed model does not have (in
train mode that run reached 98.0 %). BN after a Linear is folded by ``prepare`` before training.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from rich.progress import Progress
from torch import fx, nn

from ..errors import RecipeError, UnsupportedError
from ..layers import set_submodule, validate_patterns
from .config import QuantConfig
from .graph import convert, prepare, trace
from .lowbit import quantize_weight
from .lsq import LsqQuantizer, fake_quantize_bias
from .modules import ActivationQuantizer, QuantizedLayer
from .ptq import CalibrationData, calibrate, calibration_batches

WEIGHT_FORMATS = ("int", "binary", "ternary")
INT_BITS = (2, 3, 4, 8)
ACTIVATION_BITS = (8,)  # the runtimes' activation integers; narrower ranges would not survive export
_FORMAT_BITS = {"binary": 1, "ternary": 2}
_CONV_BN = {nn.Conv1d: nn.BatchNorm1d, nn.Conv2d: nn.BatchNorm2d}


@dataclass(frozen=True)
class QATConfig:
    """What to train and for how long. ``bits`` is the weight bit-width of ``weight_format="int"`` (2, 3, 4,
    8; default 8); binary weights are 1 bit and ternary 2, so for them ``bits`` may be omitted. Weights are
    symmetric, per output channel by default; activations 8-bit per tensor. ``learn_scales=False`` keeps the
    initial step sizes (fixed-grid QAT with the straight-through estimator only). ``freeze_bn_after``
    (epochs, 0 … epochs) stops batch-norm statistics (see the module notes); ``epochs`` and ``learning_rate``
    are for the loop that trains ``QuantizationAwareTraining.model``. ``reduce_range`` keeps int8 weights in
    7 bits for x86 runtimes without VNNI, as in QuantConfig. ``ignore`` layers stay float (and trainable)."""

    bits: int | None = None
    activation_bits: int = 8
    per_channel: bool = True
    learn_scales: bool = True
    weight_format: str = "int"
    freeze_bn_after: int = 0
    epochs: int = 3
    learning_rate: float = 1e-3
    reduce_range: bool = False
    ignore: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if self.weight_format not in WEIGHT_FORMATS:
            raise RecipeError(f"weight_format {self.weight_format!r} is not allowed; allowed: "
                              f"{', '.join(WEIGHT_FORMATS)}")
        if self.weight_format == "int":
            bits = 8 if self.bits is None else self.bits
            if bits not in INT_BITS:
                raise RecipeError(f"bits {bits} is not allowed for integer weights; allowed: {INT_BITS} "
                                  "(1-bit weights: weight_format='binary')")
        else:
            bits = _FORMAT_BITS[self.weight_format]
            if self.bits not in (None, bits):
                raise RecipeError(f"{self.weight_format} weights are {bits}-bit; bits must be {bits} or omitted, "
                                  f"got {self.bits}")
        object.__setattr__(self, "bits", bits)
        if self.activation_bits not in ACTIVATION_BITS:
            raise RecipeError(f"activation_bits {self.activation_bits} is not allowed; allowed: {ACTIVATION_BITS}")
        if isinstance(self.epochs, bool) or not isinstance(self.epochs, int) or self.epochs < 0:
            raise RecipeError(f"epochs must be an integer >= 0, got {self.epochs!r}")
        if not (isinstance(self.learning_rate, (int, float)) and 0 < self.learning_rate < float("inf")):
            raise RecipeError(f"learning_rate must be a positive number, got {self.learning_rate!r}")
        if isinstance(self.freeze_bn_after, bool) or not isinstance(self.freeze_bn_after, int) or not (
                0 <= self.freeze_bn_after <= self.epochs):
            raise RecipeError(f"freeze_bn_after must be a whole number of epochs in [0, epochs={self.epochs}], "
                              f"got {self.freeze_bn_after!r}")
        if self.reduce_range and self.bits != 8:
            raise RecipeError(f"reduce_range applies to 8-bit weights only; bits is {self.bits}")
        object.__setattr__(self, "ignore", validate_patterns(self.ignore))

    def quant_config(self) -> QuantConfig:
        """The post-training configuration whose graph QAT trains: same layers, formats and placement."""
        return QuantConfig(per_channel=self.per_channel, reduce_range=self.reduce_range, ignore=self.ignore,
                           weight_bits=self.bits, ternary=self.weight_format == "ternary")


class QATLayer(nn.Module):
    """A conv / linear layer trained through fake-quantized weights, optionally with the batch norm that
    follows it (kept, and folded on the fly). Built from the prepared QuantizedLayer, whose kind and
    weight format it takes; ``folded()`` gives the float weight and bias the converted layer quantizes."""

    def __init__(self, prepared: QuantizedLayer, weight_quantizer: LsqQuantizer, *,
                 conv: nn.Conv1d | nn.Conv2d | None = None, bn: nn.modules.batchnorm._BatchNorm | None = None
                 ) -> None:
        super().__init__()
        self.kind = prepared.kind
        if self.kind != "linear":
            self.stride, self.padding = prepared.stride, prepared.padding
            self.dilation, self.groups = prepared.dilation, prepared.groups
        source = (conv.weight, conv.bias) if bn is not None else (prepared.weight_float, prepared.bias_float)
        self.weight = nn.Parameter(source[0].detach().clone().float())
        self.bias = None if source[1] is None else nn.Parameter(source[1].detach().clone().float())
        self.bn = None if bn is None else copy.deepcopy(bn).float()
        self.bn_frozen = False
        self.weight_quantizer = weight_quantizer
        self._input: tuple[LsqQuantizer, ...] = ()  # the input's quantizer, held outside the module tree

    def attach_input(self, quantizer: LsqQuantizer) -> None:
        """The quantizer of this layer's input, whose scale sets the int32 bias's (scale_in × scale_w)."""
        self._input = (quantizer,)

    def _op(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        if self.kind == "linear":
            return F.linear(x, weight, bias)
        conv = F.conv1d if self.kind == "conv1d" else F.conv2d
        return conv(x, weight, bias, self.stride, self.padding, self.dilation, self.groups)

    def _bn_factor(self) -> torch.Tensor:
        bn = self.bn
        gamma = bn.weight if bn.affine else torch.ones_like(bn.running_var)
        return gamma / torch.sqrt(bn.running_var + bn.eps)

    def folded(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Weight and bias with batch norm folded in using its running statistics (as fold_bn_into)."""
        if self.bn is None:
            return self.weight, self.bias
        bn, factor = self.bn, self._bn_factor()
        beta = bn.bias if bn.affine else torch.zeros_like(bn.running_mean)
        bias = self.bias if self.bias is not None else torch.zeros_like(bn.running_mean)
        shape = [-1] + [1] * (self.weight.dim() - 1)
        return self.weight * factor.reshape(shape), (bias - bn.running_mean) * factor + beta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.bn is None or self.bn_frozen or not self.training:
            weight, bias = self.folded()
            if bias is not None and self._input:
                bias_scale = (self._input[0].scale() * self.weight_quantizer.scale()).clamp(min=1e-12)
                bias = fake_quantize_bias(bias, bias_scale)
            return self._op(x, self.weight_quantizer(weight), bias)
        # Quantize the weight folded with the running statistics, undo the scaling on the output, and let
        # batch norm normalise with this batch's statistics (and update the running ones).
        factor = self._bn_factor()
        shape = [-1] + [1] * (self.weight.dim() - 1)
        y = self._op(x, self.weight_quantizer(self.weight * factor.reshape(shape)), None)
        # gamma = 0 makes a channel constant (beta) whatever y is; dividing by 1 keeps it finite
        y = y / torch.where(factor == 0, torch.ones_like(factor), factor).reshape([1, -1] + [1] * (y.dim() - 2))
        if self.bias is not None:
            y = y + self.bias.reshape([1, -1] + [1] * (y.dim() - 2))
        return self.bn(y)

    def extra_repr(self) -> str:
        return f"{self.kind}, {tuple(self.weight.shape)}, bn={'frozen' if self.bn_frozen else self.bn is not None}"


class QuantizationAwareTraining:
    """Initialise (prepare + calibrate + swap in LSQ fake quantizers) → train ``.model`` calling
    ``.step()`` after each optimizer step → ``finalize()`` to the converted GraphModule. ``model`` is left
    untouched. Like post-training quantization it refuses to start without calibration data (DataError).
    ``steps_per_epoch`` is needed only to freeze batch norm part-way (``freeze_bn_after`` in 1 … epochs-1)."""

    def __init__(self, model: nn.Module, config: QATConfig | None = None, *, calibration: CalibrationData,
                 example_inputs: tuple[torch.Tensor, ...] | None = None, steps_per_epoch: int | None = None,
                 progress: Progress | None = None) -> None:
        self.config = config or QATConfig()
        freeze = self.config.freeze_bn_after
        if 0 < freeze < self.config.epochs and not steps_per_epoch:
            raise RecipeError(f"freeze_bn_after={freeze} epochs needs steps_per_epoch (the optimizer steps of one "
                              "epoch) to know when that is; none was given")
        self.steps_per_epoch, self.steps, self.finalized = steps_per_epoch, 0, False
        batches = calibration_batches(calibration, inputs=len(example_inputs) if example_inputs else 1)
        example_inputs = example_inputs or tuple(t[:1] for t in batches[0])
        gm = prepare(model, self.config.quant_config(), example_inputs)
        calibrate(gm, batches, progress)
        conv_bn = _conv_bn_pairs(model, self.config.ignore, example_inputs)
        self._originals: dict[str, nn.Module] = {}
        for name, module in list(gm.named_modules()):
            if isinstance(module, ActivationQuantizer):
                module.freeze()
                fake = LsqQuantizer(module.scale, module.zero_point, module.quant_min, module.quant_max,
                                    learn=self.config.learn_scales)
            elif isinstance(module, QuantizedLayer):
                fake = self._qat_layer(name, module, model, conv_bn, gm)
            else:
                continue
            self._originals[name] = module
            set_submodule(gm, name, fake)
        for name, module in self._originals.items():
            if isinstance(module, QuantizedLayer):
                gm.get_submodule(name).attach_input(gm.get_submodule(module.input_quantizer))
        if not self._originals:
            raise UnsupportedError(f"{type(model).__name__} has no Conv1d/Conv2d/Linear layer to train quantized "
                                   f"(ignore={list(self.config.ignore)})")
        self.model = gm
        if freeze == 0:
            self.freeze_batchnorm()

    def _qat_layer(self, name: str, layer: QuantizedLayer, model: nn.Module, conv_bn: dict[str, str],
                   gm: fx.GraphModule) -> QATLayer:
        fmt = layer.weight_format
        if layer.group_size is not None or not layer.symmetric or layer.weight_only:
            raise UnsupportedError(f"layer {name!r}: QAT trains symmetric per-channel or per-tensor weights of "
                                   f"static layers; got group_size={layer.group_size}, symmetric={layer.symmetric}, "
                                   f"weight_only={layer.weight_only}")
        # start from the scales post-training quantization fitted (one value repeated when per tensor)
        scale = layer.weight_scale if self.config.per_channel else layer.weight_scale[:1]
        quantizer = LsqQuantizer(scale, None, fmt.qmin, fmt.qmax, binary=fmt.nonzero, learn=self.config.learn_scales)
        bn_name = conv_bn.get(name)
        if bn_name is None or _has_module(gm, bn_name):  # no BN, or prepare() did not fold it
            return QATLayer(layer, quantizer)
        return QATLayer(layer, quantizer, conv=model.get_submodule(name), bn=model.get_submodule(bn_name))

    def step(self) -> None:
        """Per-step hook: call after every optimizer step (``fit(..., on_step=qat.step)``)."""
        self._check_open()
        self.steps += 1
        freeze = self.config.freeze_bn_after
        if freeze < self.config.epochs and self.steps_per_epoch and self.steps >= freeze * self.steps_per_epoch:
            self.freeze_batchnorm()

    def freeze_batchnorm(self) -> None:
        """Stop updating batch-norm statistics: from now on layers compute exactly their folded form."""
        for module in self.model.modules():
            if isinstance(module, QATLayer):
                module.bn_frozen = True

    @torch.no_grad()
    def finalize(self) -> fx.GraphModule:
        """The trained model in the converted representation: integer weights round(clamp(w / s)) with the
        learned step sizes, activation scales from the learned ones, biases quantized by ``convert``."""
        self._check_open()
        gm = self.model
        for name, original in self._originals.items():
            trained = gm.get_submodule(name)
            if isinstance(original, ActivationQuantizer):
                original.scale.copy_(trained.scale().reshape(()))
            else:
                weight, bias = trained.folded()
                scale = trained.weight_quantizer.scale().expand(weight.shape[0]).clone()
                original.weight_float.copy_(weight)
                if bias is not None:
                    original.bias_float.copy_(bias)
                zero_point = torch.zeros_like(original.weight_zero_point)
                original.assign_weights(quantize_weight(weight, scale, zero_point, original.weight_format), scale)
            set_submodule(gm, name, original)
        gm.eval()
        self.finalized = True
        return convert(gm)

    def _check_open(self) -> None:
        if self.finalized:
            raise RecipeError("quantization-aware training was already finalized; start a new one to train again")


def _has_module(gm: nn.Module, name: str) -> bool:
    try:
        gm.get_submodule(name)
    except AttributeError:
        return False
    return True


def _conv_bn_pairs(model: nn.Module, ignore: tuple[str, ...],
                   example_inputs: tuple[torch.Tensor, ...]) -> dict[str, str]:
    """Conv name → the batch norm that directly follows it as its only user: the pairs ``fold_batchnorm``
    folds. Which of them ``prepare`` really folded is checked afterwards (the BN is gone from its graph)."""
    gm = trace(copy.deepcopy(model), ignore, example_inputs)
    pairs = {}
    for node in gm.graph.nodes:
        if node.op != "call_module" or not node.args or not isinstance(node.args[0], fx.Node):
            continue
        producer = node.args[0]
        if producer.op != "call_module" or len(producer.users) != 1:
            continue
        layer, bn = gm.get_submodule(str(producer.target)), gm.get_submodule(str(node.target))
        if any(isinstance(layer, c) and isinstance(bn, b) for c, b in _CONV_BN.items()):
            pairs[str(producer.target)] = str(node.target)
    return pairs
