"""Layer-by-layer replay of a prepared graph on calibration data, for the techniques that fit each layer to what
reaches it (bias correction, AdaRound).

The float model and the quantized model so far (dequantized integer weights, frozen activation quantizers) run
side by side, node by node, every calibration batch in lockstep. Just before a QuantizedLayer executes, a visitor
receives that layer's inputs in both models and may change the layer (its bias, its integer weights); the layer
then executes as changed, so the next visit sees inputs that already carry the correction. One pass serves the
whole network, instead of one replay per layer.

The graph is read, never rewritten. The float model keeps the biases that the layers had when the replay began.
All batches are in flight at once, so memory grows with the calibration set (a few hundred samples suffice)."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import fx, nn

from ..errors import UnsupportedError
from .inputs import model_inputs
from .modules import ActivationQuantizer, QuantizedLayer

# (layer name, layer, its inputs in the float model, its inputs in the quantized model so far), one per batch
Visitor = Callable[[str, QuantizedLayer, list[torch.Tensor], list[torch.Tensor]], None]

_ACTIVATION_MODULES = (nn.ReLU, nn.ReLU6, nn.Hardtanh)
_ACTIVATION_FUNCTIONS = {F.relu, torch.relu, F.relu6, F.hardtanh, torch.ops.aten.relu.default,
                         torch.ops.aten.hardtanh.default}


def quantized_layers(gm: fx.GraphModule) -> dict[str, QuantizedLayer]:
    """Every QuantizedLayer by name in execution order, checked to be still unconverted."""
    out: dict[str, QuantizedLayer] = {}
    for node in gm.graph.nodes:
        if node.op != "call_module" or node.target in out:
            continue
        mod = gm.get_submodule(str(node.target))
        if isinstance(mod, QuantizedLayer):
            if mod.converted:
                raise UnsupportedError(f"layer {node.target!r} is already converted: bias correction and AdaRound "
                                       "run between calibrate() and convert(), while float weights are kept")
            out[str(node.target)] = mod
    return out


def freeze_activations(gm: fx.GraphModule) -> None:
    """Fix every activation quantizer's scale from its calibration statistics (what convert() does first), so
    that the quantized model so far can run without disturbing the statistics."""
    for mod in gm.modules():
        if isinstance(mod, ActivationQuantizer):
            mod.freeze()


def layer_forward(layer: QuantizedLayer, x: torch.Tensor, weight: torch.Tensor,
                  bias: torch.Tensor | None) -> torch.Tensor:
    """The layer's operation with the given weight and bias."""
    if layer.kind == "linear":
        return F.linear(x, weight, bias)
    conv = F.conv1d if layer.kind == "conv1d" else F.conv2d
    return conv(x, weight, bias, layer.stride, layer.padding, layer.dilation, layer.groups)


def channel_dim(layer: QuantizedLayer) -> int:
    """Where the output channels are: dim 1 for a conv, the last dim for a linear layer."""
    return -1 if layer.kind == "linear" else 1


def activation_after(gm: fx.GraphModule, name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The activation fused into the layer (its only user, when that is a ReLU / ReLU6 / Hardtanh), else the
    identity: the activation's output is what gets quantized and passed on."""
    node = next(n for n in gm.graph.nodes if n.op == "call_module" and n.target == name)
    if len(node.users) != 1:
        return _identity
    user = next(iter(node.users))
    if user.op == "call_module" and isinstance(gm.get_submodule(str(user.target)), _ACTIVATION_MODULES):
        return gm.get_submodule(str(user.target))
    if user.op == "call_function" and user.target in _ACTIVATION_FUNCTIONS:
        extra_args, kwargs = tuple(user.args[1:]), {k: v for k, v in user.kwargs.items() if k != "inplace"}
        return lambda x: user.target(x, *extra_args, **kwargs)
    if user.op == "call_method" and user.target == "relu":
        return torch.relu
    return _identity


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


class _Run(fx.Interpreter):
    """One batch through the float model or the quantized model so far, advanced one node at a time."""

    def __init__(self, gm: fx.GraphModule, batch: tuple[torch.Tensor, ...], quantized: bool, float_biases: dict,
                 weights: dict[str, torch.Tensor]) -> None:
        super().__init__(gm)
        self.extra_traceback = False
        self.args_iter = iter(batch)
        self.quantized, self.float_biases, self.weights = quantized, float_biases, weights

    def step(self, node: fx.Node) -> None:
        self.env[node] = self.run_node(node)
        for dead in self.user_to_last_uses.get(node, []):
            del self.env[dead]

    def input_of(self, node: fx.Node) -> torch.Tensor:
        args, _ = self.fetch_args_kwargs_from_env(node)
        return args[0]

    def call_module(self, target, args, kwargs):
        mod = self.fetch_attr(target)
        if isinstance(mod, ActivationQuantizer):
            return mod(args[0]) if self.quantized else args[0]
        if isinstance(mod, QuantizedLayer):
            if not self.quantized:
                return layer_forward(mod, args[0], mod.weight_float, self.float_biases[target])
            if target not in self.weights:  # dequantize once per pass, after the visitor has had its say
                self.weights[target] = mod.dequantized_weight()
            return layer_forward(mod, args[0], self.weights[target], mod.bias_float)
        return super().call_module(target, args, kwargs)


@torch.no_grad()
def replay_layers(gm: fx.GraphModule, batches: list[tuple[torch.Tensor, ...]] | list[torch.Tensor],
                  visit: Visitor) -> None:
    """Run ``batches`` through the float and the quantized model so far, calling ``visit`` before each
    QuantizedLayer executes (once per layer, in execution order). Activation quantizers are frozen first.
    ``visit`` runs under no_grad; it may enable grad for its own optimisation."""
    if not batches:
        raise UnsupportedError("layer-wise replay needs at least one calibration batch")
    freeze_activations(gm)
    layers = quantized_layers(gm)
    float_biases = {name: layer.bias_float for name, layer in layers.items()}
    weights: dict[str, torch.Tensor] = {}
    inputs = [model_inputs(b) for b in batches]
    runs = [(_Run(gm, b, False, float_biases, weights), _Run(gm, b, True, float_biases, weights)) for b in inputs]
    visited = set()
    for node in gm.graph.nodes:
        if node.op == "output":
            break
        if node.op == "call_module" and node.target in layers and node.target not in visited:
            visited.add(node.target)
            visit(str(node.target), layers[node.target], [f.input_of(node) for f, _ in runs],
                  [q.input_of(node) for _, q in runs])
            weights.pop(str(node.target), None)
        for float_run, quantized_run in runs:
            float_run.step(node)
            quantized_run.step(node)
