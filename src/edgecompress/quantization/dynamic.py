"""Dynamic INT8 quantization (Q2) of Linear, LSTM and GRU layers: int8 weights stored once, input
activations quantized at run time (per tensor, uint8, as ONNX DynamicQuantizeLinear computes it), integer
matrix products (MatMulInteger), float results rescaled by input_scale × weight_scale. No calibration data.

Recurrent layers are unrolled in PyTorch so that every projection — the input projection over the whole
sequence and the hidden projection at each step — is such an integer product; the gate arithmetic
(sigmoid, tanh, the cell update) stays in float. Gate order is torch's: LSTM i, f, g, o; GRU r, z, n.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from torch import nn

from ..errors import RecipeError, UnsupportedError
from ..layers import set_submodule, validate_patterns, weight_layers
from . import dynamic_ops, ops
from .qparams import INT8_WEIGHT, INT8_WEIGHT_REDUCED, symmetric_qparams

DYNAMIC_TYPES: tuple[type[nn.Module], ...] = (nn.Linear, nn.LSTM, nn.GRU)


@dataclass(frozen=True)
class DynamicConfig:
    """Dynamic INT8: symmetric int8 weights per output channel (or per tensor), uint8 activations quantized
    at run time. ``reduce_range`` keeps weights in 7 bits (±63) for runtimes whose u8×s8 kernels sum pairs of
    products in int16 (ONNX Runtime on x86 without VNNI; see qparams.INT8_WEIGHT_REDUCED). ``ignore`` keeps
    layers (exact names or ``re:`` patterns, a parent covering its children) in float."""

    per_channel: bool = True
    ignore: tuple[str, ...] = field(default_factory=tuple)
    reduce_range: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.per_channel, bool):
            raise RecipeError(f"per_channel must be true or false, got {self.per_channel!r}")
        if not isinstance(self.reduce_range, bool):
            raise RecipeError(f"reduce_range must be true or false, got {self.reduce_range!r}")
        object.__setattr__(self, "ignore", validate_patterns(self.ignore))

    @property
    def weight_bits(self) -> int:
        return 7 if self.reduce_range else 8


class DynamicQuantizedLinear(nn.Module):
    """y = MatMulInteger(DynamicQuantizeLinear(x), W) · (x_scale · w_scale) + bias. The weight is stored
    transposed, int8 (in_features, out_features), the layout MatMulInteger multiplies by, with one scale per
    output feature (or one repeated for per-tensor); the bias stays float32."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, config: DynamicConfig) -> None:
        super().__init__()
        fmt = INT8_WEIGHT_REDUCED if config.reduce_range else INT8_WEIGHT
        weight = weight.detach().float()
        absmax = weight.abs().amax(dim=1)
        if not config.per_channel:
            absmax = absmax.max().expand_as(absmax).clone()
        scale, zero_point = symmetric_qparams(absmax, fmt)
        weight_int = ops.quantize_per_channel(weight, scale, zero_point, 0, fmt.qmin, fmt.qmax, fmt.dtype)
        self.in_features, self.out_features = weight.shape[1], weight.shape[0]
        self.per_channel, self.weight_bits = config.per_channel, config.weight_bits
        self.register_buffer("weight_int", weight_int.t().contiguous())
        self.register_buffer("weight_scale", scale)
        self.register_buffer("bias", None if bias is None else bias.detach().float().clone())

    @classmethod
    def from_float(cls, layer: nn.Linear, config: DynamicConfig) -> DynamicQuantizedLinear:
        return cls(layer.weight, layer.bias, config)

    def dequantized_weight(self) -> torch.Tensor:
        """The (out_features, in_features) float weight the integers stand for."""
        return (self.weight_int.float() * self.weight_scale).t()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, x_scale, x_zero_point = dynamic_ops.dynamic_quantize(x)
        acc = dynamic_ops.matmul_integer(q, x_zero_point, self.weight_int)
        y = acc.to(torch.float32) * (x_scale * self.weight_scale)
        return y if self.bias is None else y + self.bias

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"weight int{self.weight_bits}, per_channel={self.per_channel}")


class _DynamicQuantizedRecurrent(nn.Module):
    """Shared unrolling of a multi-layer, optionally bidirectional LSTM or GRU. Each layer and direction has
    an input projection (applied to the whole sequence at once) and a hidden projection (applied per step),
    named like torch's parameters: ``ih_l0``, ``hh_l0``, ``ih_l0_reverse``… Subclasses set ``gates`` and
    ``mode`` and define ``_cell(x_gates, h_gates, state) -> state`` (state[0] is the hidden state)."""

    gates: int
    mode: str

    def __init__(self, rnn: nn.LSTM | nn.GRU, config: DynamicConfig) -> None:
        super().__init__()
        if getattr(rnn, "proj_size", 0):
            raise UnsupportedError(f"LSTM with proj_size={rnn.proj_size} cannot be dynamically quantized; "
                                   "allowed: proj_size=0")
        self.input_size, self.hidden_size, self.num_layers = rnn.input_size, rnn.hidden_size, rnn.num_layers
        self.batch_first, self.bidirectional = rnn.batch_first, rnn.bidirectional
        self.weight_bits = config.weight_bits
        self.projections = nn.ModuleDict()
        for layer in range(self.num_layers):
            for suffix in self._suffixes():
                for kind in ("ih", "hh"):
                    key = f"{kind}_l{layer}{suffix}"
                    bias = getattr(rnn, f"bias_{key}") if rnn.bias else None
                    self.projections[key] = DynamicQuantizedLinear(getattr(rnn, f"weight_{key}"), bias, config)

    def _suffixes(self) -> tuple[str, ...]:
        return ("", "_reverse") if self.bidirectional else ("",)

    def _initial_state(self, x: torch.Tensor, hx) -> list[tuple[torch.Tensor, ...] | None]:
        """Per (layer, direction): the initial state, or None for zeros (whose hidden projection is exactly
        its bias, so the first step skips the integer product of a zero tensor)."""
        count = self.num_layers * len(self._suffixes())
        if hx is None:
            return [None] * count
        parts = hx if isinstance(hx, tuple) else (hx,)
        return [tuple(p[i] for p in parts) for i in range(count)]

    def _direction(self, seq: torch.Tensor, layer: int, suffix: str, state) -> tuple[torch.Tensor, tuple]:
        """Run one layer in one direction over ``seq`` (B, T, F); returns outputs (B, T, H) and final state."""
        x_gates = self.projections[f"ih_l{layer}{suffix}"](seq)
        hidden = self.projections[f"hh_l{layer}{suffix}"]
        steps = range(seq.shape[1] - 1, -1, -1) if suffix else range(seq.shape[1])
        outputs: list[torch.Tensor] = []
        for t in steps:
            if state is None:
                zeros = seq.new_zeros(seq.shape[0], self.hidden_size)
                state = (zeros,) * (2 if self.mode == "LSTM" else 1)
                h_gates = (hidden.bias if hidden.bias is not None
                           else seq.new_zeros(self.gates * self.hidden_size)).expand(seq.shape[0], -1)
            else:
                h_gates = hidden(state[0])
            state = self._cell(x_gates[:, t], h_gates, state)
            outputs.append(state[0])
        if suffix:
            outputs.reverse()
        return torch.stack(outputs, dim=1), state

    def forward(self, x: torch.Tensor, hx=None):
        if not isinstance(x, torch.Tensor):
            raise UnsupportedError(f"dynamically quantized {self.mode} takes a padded tensor, got "
                                   f"{type(x).__name__}; packed sequences are not supported")
        unbatched = x.dim() == 2
        if unbatched:
            x = x.unsqueeze(0)
            hx = None if hx is None else tuple(h.unsqueeze(1) for h in (hx if isinstance(hx, tuple) else (hx,)))
        elif not self.batch_first:
            x = x.transpose(0, 1)
        states = self._initial_state(x, hx)
        finals: list[tuple[torch.Tensor, ...]] = []
        seq = x
        for layer in range(self.num_layers):
            outs = []
            for d, suffix in enumerate(self._suffixes()):
                out, final = self._direction(seq, layer, suffix, states[layer * len(self._suffixes()) + d])
                outs.append(out)
                finals.append(final)
            seq = torch.cat(outs, dim=-1) if len(outs) > 1 else outs[0]
        output = seq.squeeze(0) if unbatched else (seq if self.batch_first else seq.transpose(0, 1))
        state = tuple(torch.stack([f[i] for f in finals]) for i in range(len(finals[0])))
        if unbatched:
            state = tuple(s.squeeze(1) for s in state)
        return output, (state if self.mode == "LSTM" else state[0])

    def extra_repr(self) -> str:
        return (f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}, "
                f"batch_first={self.batch_first}, bidirectional={self.bidirectional}, weight int{self.weight_bits}")


class DynamicQuantizedLSTM(_DynamicQuantizedRecurrent):
    gates, mode = 4, "LSTM"

    def _cell(self, x_gates, h_gates, state):
        c = state[1]
        i, f, g, o = (x_gates + h_gates).chunk(4, dim=-1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c


class DynamicQuantizedGRU(_DynamicQuantizedRecurrent):
    gates, mode = 3, "GRU"

    def _cell(self, x_gates, h_gates, state):
        h = state[0]
        xr, xz, xn = x_gates.chunk(3, dim=-1)
        hr, hz, hn = h_gates.chunk(3, dim=-1)
        r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
        n = torch.tanh(xn + r * hn)
        return ((1 - z) * n + z * h,)


def _replacement(module: nn.Module, config: DynamicConfig) -> nn.Module:
    if isinstance(module, nn.LSTM):
        return DynamicQuantizedLSTM(module, config)
    if isinstance(module, nn.GRU):
        return DynamicQuantizedGRU(module, config)
    return DynamicQuantizedLinear.from_float(module, config)


def quantize_dynamic(model: nn.Module, config: DynamicConfig | None = None) -> nn.Module:
    """A copy of ``model`` (left untouched) whose Linear, LSTM and GRU layers hold int8 weights and quantize
    their inputs at run time. Linear layers that other modules read weights from directly (those inside
    nn.MultiheadAttention) stay float."""
    config = config or DynamicConfig()
    quantized = copy.deepcopy(model).eval()
    targets = [(name, m) for name, m in weight_layers(quantized, config.ignore, DYNAMIC_TYPES)
               if not isinstance(m, nn.modules.linear.NonDynamicallyQuantizableLinear)]
    if not targets:
        raise UnsupportedError(f"{type(model).__name__} has no Linear, LSTM or GRU layer left to quantize "
                               f"dynamically (ignore: {list(config.ignore)}); dynamic quantization covers "
                               "those three layer types only")
    for name, module in targets:
        if not name:  # the model is itself one such layer
            return _replacement(module, config).eval()
        set_submodule(quantized, name, _replacement(module, config))
    return quantized
