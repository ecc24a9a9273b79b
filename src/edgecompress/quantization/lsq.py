"""Differentiable fake quantization for quantization-aware training: the straight-through estimator and
learned step sizes (LSQ, Esser et al. 2020, "Learned Step Size Quantization").

The forward pass computes exactly what the converted model computes (round half to even, then add the
zero point, then clamp — the order of ONNX QuantizeLinear), so a model evaluated during training already
shows the accuracy it will have once converted. The custom ops in ``ops.py`` have no autograd; these are
plain torch expressions that autograd differentiates:

- rounding passes the gradient straight through (STE), clamping stops it outside the integer range;
- the step size s receives LSQ's gradient, ∂x̂/∂s = round(x/s) − x/s inside the range and qmin or qmax
  (minus the zero point) outside, scaled by g = 1/√(N·qmax) as in the paper;
- initial step sizes are the post-training ones (calibrated activation ranges, and the weight scales
  QuantizedLayer fits: error-minimising below 8 bits), so training starts from the PTQ model;
- s is learned in the log domain, s = s0·exp(t): it stays positive, and Adam-style optimizers
  (``training.fit`` uses AdamW) move it by a fraction of itself rather than by an absolute amount that
  would be huge for a 0.005 weight step.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .qparams import INT32_BIAS, MIN_SCALE


def _straight_through(forward: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``forward``'s value exactly (x − x is exactly 0), ``x``'s gradient."""
    return forward.detach() + (x - x.detach())


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """Round half to even forward, identity backward."""
    return _straight_through(torch.round(x), x)


def sign_ste(x: torch.Tensor) -> torch.Tensor:
    """±1 forward (0 → +1, as binary codes have no zero), identity backward."""
    return _straight_through(torch.where(x >= 0, 1.0, -1.0), x)


def grad_scale(x: torch.Tensor, g: float) -> torch.Tensor:
    """``x`` forward (bit for bit), gradient multiplied by ``g`` backward (LSQ's step-size gradient scale)."""
    y = x * g
    return x.detach() + (y - y.detach())


def fake_quantize_ste(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor | float, qmin: int,
                      qmax: int, *, binary: bool = False) -> torch.Tensor:
    """(clamp(round(x/s) + z, qmin, qmax) − z)·s with the STE; ``scale`` broadcasts against ``x``.
    ``binary`` codes are sign(x/s) ∈ {−1, +1} (zero point 0), the gradient passing where |x/s| ≤ 1."""
    v = x / scale
    if binary:
        return sign_ste(torch.clamp(v, -1.0, 1.0)) * scale
    q = torch.clamp(round_ste(v) + zero_point, qmin, qmax)
    return (q - zero_point) * scale


def fake_quantize_bias(bias: torch.Tensor, bias_scale: torch.Tensor) -> torch.Tensor:
    """The int32 bias of integer kernels (scale = input scale × weight scale), rounded with the STE; the
    scale is treated as a constant here, so step sizes learn from the weights and activations only."""
    bias_scale = bias_scale.detach()
    q = torch.clamp(round_ste(bias / bias_scale), INT32_BIAS.qmin, INT32_BIAS.qmax)
    return q * bias_scale


class LsqQuantizer(nn.Module):
    """A fake quantizer with learned step size(s): one per tensor (activations, a 0-d scale) or, for
    weights, shape (channels,) or (1,) along axis 0. The zero point is an integer fixed at initialisation
    (0 for symmetric weights; the calibrated value for asymmetric activations), so every value it takes is
    representable as is."""

    def __init__(self, scale: torch.Tensor, zero_point: torch.Tensor | None, qmin: int, qmax: int, *,
                 binary: bool = False, learn: bool = True) -> None:
        super().__init__()
        self.qmin, self.qmax, self.binary = int(qmin), int(qmax), binary
        self.is_weight = scale.dim() > 0  # weights: scales along axis 0
        initial = scale.detach().float().clamp(min=MIN_SCALE).clone()
        self.register_buffer("initial_scale", initial)
        # s = s0·exp(t), t learned from 0: exp(0) is exactly 1, so before training the step sizes are the
        # initial ones bit for bit (a stored log s would round-trip through exp with an error of one ulp)
        self.log_gain = nn.Parameter(torch.zeros_like(initial), requires_grad=learn)
        zp = torch.zeros_like(initial) if zero_point is None else zero_point.detach().float()
        self.register_buffer("zero_point", zp.reshape(initial.shape))

    @property
    def learned(self) -> bool:
        return self.log_gain.requires_grad

    def scale(self) -> torch.Tensor:
        """The current step size(s), as the converted model will store them."""
        return (self.initial_scale * torch.exp(self.log_gain)).clamp(min=MIN_SCALE)

    def _broadcast(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return t.reshape([-1] + [1] * (x.dim() - 1)) if self.is_weight else t

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.scale()
        if self.learned:
            # N: the values sharing one step size (weights), or the features of one sample (activations)
            n = x.numel() // scale.numel() if self.is_weight else x[0].numel()
            scale = grad_scale(scale, 1.0 / math.sqrt(n * max(self.qmax, 1)))
        return fake_quantize_ste(x, self._broadcast(scale, x), self._broadcast(self.zero_point, x), self.qmin,
                                 self.qmax, binary=self.binary)

    def extra_repr(self) -> str:
        kind = "binary" if self.binary else f"[{self.qmin}, {self.qmax}]"
        return f"{kind}, scales={self.initial_scale.numel()}, learned={self.learned}"
