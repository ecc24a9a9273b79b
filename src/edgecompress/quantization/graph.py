"""Turn a float model into the quantized representation's graph: trace with torch.fx, fold batch norm,
swap conv/linear for QuantizedLayer, and place activation quantization points where integer kernels
need them.

Placement rules (what ONNX Runtime's QDQ fusion and TFLite's int8 kernels expect):
- every input of a quantized op (QuantizedLayer, add, mul, cat) is quantized;
- the output of a quantized op is quantized after its activation (ReLU/ReLU6 folds into the op), except
  a Linear's output that reaches only float ops (GELU, LayerNorm, a residual add of a transformer, attention
  arithmetic): re-quantizing it per tensor would only add error (BERT's outlier-heavy projections lose
  most of their accuracy there), and runtimes fuse such a Linear into an integer product with a float
  result (ONNX Runtime's MatMulIntegerToFloat), as ONNX Runtime's and NNCF's own quantizers leave it;
- shape and pooling ops that keep values in range (flatten, reshape, max/avg pool, standalone ReLU,
  dropout) reuse their input's quantizer, so the integer tensor flows through them unchanged;
- any other op (softmax, layer norm, GELU, ...) runs in float between a dequantize and a quantize;
- with ``weight_only`` nothing is placed: only weights are quantized, every activation stays float.
"""

from __future__ import annotations

import copy
import operator

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from ..errors import UnsupportedError
from ..layers import matches, set_submodule
from ..lifting import lift_layers
from .config import QuantConfig
from .fold import fold_batchnorm
from .modules import ActivationQuantizer, QuantizedLayer
from .observers import make_observer
from .qparams import activation_format

aten = torch.ops.aten

_QUANTIZABLE_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Linear)
_ACTIVATION_MODULES = (nn.ReLU, nn.ReLU6, nn.Hardtanh)
# Python-level and aten-level spellings (a model loaded from a .pt2 program calls aten ops directly).
_ACTIVATION_FUNCTIONS = {F.relu, torch.relu, F.relu6, F.hardtanh, aten.relu.default, aten.hardtanh.default}
_PASS_THROUGH_MODULES = (nn.ReLU, nn.ReLU6, nn.Hardtanh, nn.MaxPool1d, nn.MaxPool2d, nn.AvgPool1d, nn.AvgPool2d,
                         nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.Flatten, nn.Dropout, nn.Identity)
_PASS_THROUGH_FUNCTIONS = {F.relu, torch.relu, F.relu6, F.hardtanh, torch.flatten, torch.reshape, torch.squeeze,
                           torch.unsqueeze, F.max_pool1d, F.max_pool2d, F.avg_pool1d, F.avg_pool2d,
                           F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.dropout,
                           aten.relu.default, aten.hardtanh.default, aten.flatten.using_ints, aten.view.default,
                           aten.reshape.default, aten.squeeze.dim, aten.unsqueeze.default, aten.max_pool1d.default,
                           aten.max_pool2d.default, aten.avg_pool1d.default, aten.avg_pool2d.default,
                           aten.adaptive_avg_pool1d.default, aten.adaptive_avg_pool2d.default, aten.dropout.default}
_PASS_THROUGH_METHODS = {"relu", "flatten", "view", "reshape", "squeeze", "unsqueeze", "contiguous"}
_ARITHMETIC_FUNCTIONS = {operator.add, torch.add, operator.mul, torch.mul, torch.cat, aten.add.Tensor,
                         aten.mul.Tensor, aten.cat.default}
_CAT_FUNCTIONS = {torch.cat, aten.cat.default}


class _Tracer(fx.Tracer):
    """symbolic_trace, except that ignored modules are leaves: they stay float and are not traced into."""

    def __init__(self, ignore: tuple[str, ...]) -> None:
        super().__init__()
        self.ignore = ignore

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if module_qualified_name and matches(module_qualified_name, self.ignore):
            return True
        if module_qualified_name == "_guards_fn":  # torch.export's input-shape guard: keep it as one call
            return True
        return super().is_leaf_module(m, module_qualified_name)


def trace(model: nn.Module, ignore: tuple[str, ...] = (),
          example_inputs: tuple[torch.Tensor, ...] | None = None) -> fx.GraphModule:
    """The model as an fx graph: torch.fx's symbolic trace, or, where that fails (Hugging Face models, Python
    control flow on shapes), torch.export's graph on ``example_inputs`` with its layer calls lifted back into
    modules of the original names (batch size kept dynamic)."""
    try:
        tracer = _Tracer(ignore)
        graph = tracer.trace(model)  # sets tracer.root
        return fx.GraphModule(tracer.root, graph, type(model).__name__)
    except Exception as e:  # tracing errors come in many types; all mean the same thing to the user
        fx_error = f"{type(e).__name__}: {e}"
    if example_inputs is None:
        raise UnsupportedError(f"torch.fx could not trace {type(model).__name__} ({fx_error}), and without example "
                               "inputs torch.export cannot be tried; pass example_inputs")
    try:
        program = export_program(model, example_inputs)
    except Exception as e:
        raise UnsupportedError(
            f"neither torch.fx ({fx_error}) nor torch.export ({type(e).__name__}: {str(e).splitlines()[0]}) could "
            f"capture {type(model).__name__}. Quantization needs a forward without data-dependent control flow; "
            "list untraceable submodules under `ignore:` to keep them in float") from None
    lifted = lift_layers(program.module())
    graph = _Tracer(ignore).trace(lifted)
    return fx.GraphModule(lifted, graph, type(model).__name__)


def export_program(model: nn.Module, example_inputs: tuple[torch.Tensor, ...]) -> torch.export.ExportedProgram:
    """torch.export with the batch dimension dynamic when the example batch allows it (a batch of 1 is
    specialised by torch.export, so a batch of 2 is made from it)."""
    inputs = tuple(torch.cat([x, x]) if x.shape[0] == 1 else x for x in example_inputs)
    batch = torch.export.Dim("batch")
    return torch.export.export(model.eval(), inputs, dynamic_shapes=tuple({0: batch} for _ in inputs), strict=False)


def _module(gm: fx.GraphModule, node: fx.Node) -> nn.Module | None:
    return gm.get_submodule(str(node.target)) if node.op == "call_module" else None


def _is_activation(gm: fx.GraphModule, node: fx.Node) -> bool:
    mod = _module(gm, node)
    if mod is not None:
        return isinstance(mod, _ACTIVATION_MODULES)
    return (node.op == "call_function" and node.target in _ACTIVATION_FUNCTIONS) or (
        node.op == "call_method" and node.target == "relu")


def _is_pass_through(gm: fx.GraphModule, node: fx.Node) -> bool:
    mod = _module(gm, node)
    if mod is not None:
        return isinstance(mod, _PASS_THROUGH_MODULES)
    return (node.op == "call_function" and node.target in _PASS_THROUGH_FUNCTIONS) or (
        node.op == "call_method" and node.target in _PASS_THROUGH_METHODS)


def _is_quantized_op(gm: fx.GraphModule, node: fx.Node) -> bool:
    mod = _module(gm, node)
    if isinstance(mod, QuantizedLayer):
        return not mod.weight_only  # weight-only layers take float inputs and give float outputs
    return node.op == "call_function" and node.target in _ARITHMETIC_FUNCTIONS


def _is_float_tensor(node: object) -> bool:
    if not isinstance(node, fx.Node):
        return False
    meta = node.meta.get("tensor_meta")
    return meta is not None and hasattr(meta, "dtype") and meta.dtype.is_floating_point


def _tensor_inputs(node: fx.Node) -> list[fx.Node]:
    args = node.args[0] if node.target in _CAT_FUNCTIONS else node.args
    return [a for a in args if _is_float_tensor(a)]


def _derived_from_float_inputs(gm: fx.GraphModule) -> set[fx.Node]:
    """Nodes whose value depends on a float graph input: activations. Tensors computed only from integer inputs
    (token ids, masks) or from parameters stay float where they meet arithmetic."""
    derived: set[fx.Node] = set()
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            if _is_float_tensor(node):
                derived.add(node)
        elif any(a in derived for a in node.all_input_nodes):
            derived.add(node)
    return derived


class _Placer:
    """Inserts ActivationQuantizer calls into the graph, one per float tensor at most."""

    def __init__(self, gm: fx.GraphModule, config: QuantConfig) -> None:
        self.gm, self.config = gm, config
        self.fmt = activation_format(config.activation_dtype)
        self.quantized: dict[fx.Node, fx.Node] = {}  # float tensor → its quantizer's output
        self.outputs: set[fx.Node] = set()  # nodes that are quantizer outputs

    def _new_module(self, producer: fx.Node) -> str:
        base = f"{producer.name}_quant"
        name, i = base, 1
        while hasattr(self.gm, name):
            name, i = f"{base}_{i}", i + 1
        observer = make_observer(self.config.observer, percentile=self.config.percentile, fmt=self.fmt)
        self.gm.add_submodule(name, ActivationQuantizer(self.fmt, observer))
        return name

    def after(self, producer: fx.Node, module_name: str | None = None, *, rewire: bool) -> fx.Node:
        """A quantizer call on ``producer``'s output; with ``rewire`` every other user reads it instead."""
        if producer in self.quantized:
            return self.quantized[producer]
        users = list(producer.users)
        with self.gm.graph.inserting_after(producer):
            q = self.gm.graph.call_module(module_name or self._new_module(producer), (producer,))
        if rewire:
            for user in users:
                user.replace_input_with(producer, q)
        self.quantized[producer] = q
        self.outputs.add(q)
        return q

    def _reaches_integer_op(self, node: fx.Node, from_activations: set[fx.Node]) -> bool:
        """Whether ``node``'s value reaches, directly or through pass-through ops, a quantized op or the graph
        output (kept integer for full-integer targets)."""
        for user in node.users:
            if user.op == "output" or _is_quantized_op(self.gm, user) and (
                    not (user.op == "call_function" and user.target in _ARITHMETIC_FUNCTIONS)
                    or all(a in from_activations for a in _tensor_inputs(user))):
                return True
            if _is_pass_through(self.gm, user) and user.args and user.args[0] is node and self._reaches_integer_op(
                    user, from_activations):
                return True
        return False

    def run(self) -> None:
        gm = self.gm
        from_activations = _derived_from_float_inputs(gm)
        for node in list(gm.graph.nodes):
            if node.op == "call_function" and node.target in _ARITHMETIC_FUNCTIONS and not all(
                    a in from_activations for a in _tensor_inputs(node)):
                continue  # e.g. scores + attention mask: the mask (-3.4e38 where masked) has no useful int8 scale
            if _is_quantized_op(gm, node):
                for arg in _tensor_inputs(node):
                    if arg not in self.outputs:
                        node.replace_input_with(arg, self.after(arg, rewire=False))
                out = node
                users = list(node.users)
                if len(users) == 1 and _is_activation(gm, users[0]):
                    out = users[0]
                mod = _module(gm, node)
                if not (isinstance(mod, QuantizedLayer) and mod.kind == "linear") or self._reaches_integer_op(
                        out, from_activations):
                    self.after(out, rewire=True)
            elif _is_pass_through(gm, node) and node.args and node.args[0] in self.outputs:
                shared = str(node.args[0].target)
                self.after(node, shared, rewire=True)


def _quantized_layer(mod: nn.Module, name: str, config: QuantConfig) -> QuantizedLayer | None:
    """The QuantizedLayer for ``mod`` under ``config`` (None: the layer stays float, 16 bits in ``layer_bits``).
    ``group_size`` and ``ternary`` concern the layers below 8 bits, ``reduce_range`` the 8-bit ones, so one
    config can mix 4-bit grouped layers with per-channel INT8 layers."""
    bits = config.bits_for(name)
    if bits >= 16:
        return None
    return QuantizedLayer(mod, per_channel=config.per_channel, reduce_range=config.reduce_range and bits == 8,
                          bits=bits, group_size=config.group_size if bits < 8 else None,
                          symmetric=config.weight_symmetric, ternary=config.ternary and bits == 2,
                          weight_only=config.weight_only)


def prepare(model: nn.Module, config: QuantConfig, example_inputs: tuple[torch.Tensor, ...]) -> fx.GraphModule:
    """A copy of ``model`` in the quantized representation, observers armed for calibration."""
    model = copy.deepcopy(model).eval()
    gm = trace(model, config.ignore, example_inputs)
    ShapeProp(gm).propagate(*example_inputs)
    if config.fold_batchnorm:
        fold_batchnorm(gm)
    for node in gm.graph.nodes:
        mod = _module(gm, node)
        if isinstance(mod, _QUANTIZABLE_LAYERS) and not matches(str(node.target), config.ignore):
            if isinstance(mod, (nn.Conv1d, nn.Conv2d)) and mod.padding_mode != "zeros":
                continue  # stays float; QuantizedLayer only lowers zero padding
            layer = _quantized_layer(mod, str(node.target), config)
            if layer is not None:
                set_submodule(gm, str(node.target), layer)
    if not config.weight_only:  # weight-only: every activation stays float
        _Placer(gm, config).run()
    for node in gm.graph.nodes:
        mod = _module(gm, node)
        if isinstance(mod, QuantizedLayer) and not mod.weight_only:
            mod.input_quantizer = str(node.args[0].target)
    gm.graph.lint()
    gm.recompile()
    return gm


def convert(gm: fx.GraphModule) -> fx.GraphModule:
    """Freeze every quantizer's scale from its statistics and make the layers integer."""
    for mod in gm.modules():
        if isinstance(mod, ActivationQuantizer):
            mod.freeze()
    for mod in gm.modules():
        if isinstance(mod, QuantizedLayer) and not mod.converted:
            mod.convert(None if mod.input_quantizer is None else gm.get_submodule(mod.input_quantizer).scale)
    return gm
