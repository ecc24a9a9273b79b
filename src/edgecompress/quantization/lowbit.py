"""Weight quantization at any bit-width: per channel, per tensor or per group of consecutive input elements.

Weights are viewed as a matrix [out, K] (Linear: K = in_features; Conv: K = in_channels/groups × kernel),
and a group is ``group_size`` consecutive elements of a row (the last group of a row may be shorter), the
layout of ONNX's blocked DequantizeLinear and of ONNX Runtime's MatMulNBits. Scales have shape [out]
(per channel; per tensor repeats one value) or [out, ceil(K / group_size)].

Below 8 bits the scale of each channel or group is fitted to minimise the squared rounding error (a grid of
clipping ratios, then least-squares refinement of the scale for the chosen codes): with few levels, clipping
the largest weights is much better than covering them. Binary weights use the closed-form
optimum, mean |w| (XNOR-Net). 8-bit weights keep plain absmax / min-max scales. Every scale is then made a
float16 number (see to_half_precision): to the nearest one after a search, to the next larger one for absmax
scales so that no weight is clipped.
"""

from __future__ import annotations

import torch

from .qparams import MIN_SCALE, IntFormat

# Clipping ratios tried below 8 bits (fraction of the channel's or group's absmax / range), then least-squares
# refinement steps; rows are fitted in chunks small enough for the CPU caches.
_CLIP_RATIOS = torch.linspace(0.25, 1.0, 16).tolist()
_REFINE_STEPS = 4
_CHUNK = 1 << 16  # elements
_HALF_TINY = 2.0**-14  # smallest normal float16


def group_count(k: int, group_size: int | None) -> int:
    return 1 if group_size is None else -(-k // group_size)


def expand_groups(values: torch.Tensor, k: int, group_size: int | None) -> torch.Tensor:
    """Per-channel [out] or per-group [out, G] values → one per weight element, shape [out, K]."""
    if group_size is None:
        return values.reshape(-1, 1).expand(-1, k)
    return values.repeat_interleave(group_size, dim=1)[:, :k]


def _rows(w2: torch.Tensor, per_channel: bool, group_size: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The weights that share one scale, one row each (zero padded: a zero is exact in every format, so the
    padding changes neither the range nor the error), and the number of real values in each row."""
    out, k = w2.shape
    if group_size is None:
        rows = w2 if per_channel else w2.reshape(1, -1)
        return rows, torch.full((rows.shape[0],), rows.shape[1])
    groups = group_count(k, group_size)
    padded = torch.nn.functional.pad(w2, (0, groups * group_size - k))
    counts = torch.full((groups,), group_size)
    counts[-1] = k - (groups - 1) * group_size
    return padded.reshape(out * groups, group_size), counts.repeat(out)


def _codes(w: torch.Tensor, scale: torch.Tensor, zp: torch.Tensor | None, fmt: IntFormat) -> torch.Tensor:
    """Float codes in [qmin, qmax] of ``w`` [R, n] for per-row ``scale`` / ``zp`` of shape [R, 1]."""
    if fmt.nonzero:
        return torch.where(w >= 0, 1.0, -1.0)
    q = torch.round(w / scale)
    if zp is not None:
        q += zp
    return q.clamp_(fmt.qmin, fmt.qmax)


def _error(w: torch.Tensor, scale: torch.Tensor, zp: torch.Tensor | None, fmt: IntFormat) -> torch.Tensor:
    """Squared error of each row quantized with ``scale`` / ``zp`` [R, 1]."""
    q = _codes(w, scale, zp, fmt)
    if zp is not None:
        q -= zp
    return q.mul_(scale).sub_(w).square_().sum(-1)


def _fit_symmetric(w: torch.Tensor, counts: torch.Tensor, fmt: IntFormat, search: bool) -> torch.Tensor:
    """Scale per row of ``w`` [R, n] (zero point 0)."""
    if fmt.nonzero:  # binary: argmin_s |w - s·sign(w)|² = mean |w|
        return torch.clamp(w.abs().sum(-1) / counts.clamp(min=1), min=MIN_SCALE)
    base = torch.clamp(w.abs().amax(-1) / fmt.qmax, min=MIN_SCALE)
    if not search:
        return base
    best, best_err = base, torch.full_like(base, float("inf"))
    for r in _CLIP_RATIOS:
        s = torch.clamp(base * r, min=MIN_SCALE)
        err = _error(w, s[:, None], None, fmt)
        better = err < best_err
        best, best_err = torch.where(better, s, best), torch.where(better, err, best_err)
    for _ in range(_REFINE_STEPS):  # least-squares scale for the current codes: s = <w, q> / <q, q>
        q = _codes(w, best[:, None], None, fmt)
        qq = (q * q).sum(-1)
        s = torch.where(qq > 0, (w * q).sum(-1) / qq.clamp(min=1), best).clamp(min=MIN_SCALE)
        err = _error(w, s[:, None], None, fmt)
        better = err < best_err
        best, best_err = torch.where(better, s, best), torch.where(better, err, best_err)
    return best


def _affine(lo: torch.Tensor, hi: torch.Tensor, fmt: IntFormat) -> tuple[torch.Tensor, torch.Tensor]:
    lo, hi = torch.clamp(lo, max=0.0), torch.clamp(hi, min=0.0)  # 0 stays exact (padding, pruned weights)
    scale = torch.clamp((hi - lo) / (fmt.qmax - fmt.qmin), min=MIN_SCALE)
    zp = torch.clamp(torch.round(fmt.qmin - lo / scale), fmt.qmin, fmt.qmax)
    return scale, zp


def _fit_asymmetric(w: torch.Tensor, fmt: IntFormat, search: bool) -> tuple[torch.Tensor, torch.Tensor]:
    lo, hi = w.amin(-1), w.amax(-1)
    if not search:
        return _affine(lo, hi, fmt)
    best_s, best_z = _affine(lo, hi, fmt)
    best_err = torch.full_like(best_s, float("inf"))
    for r in _CLIP_RATIOS:
        s, z = _affine(lo * r, hi * r, fmt)
        err = _error(w, s[:, None], z[:, None], fmt)
        better = err < best_err
        best_s, best_z = torch.where(better, s, best_s), torch.where(better, z, best_z)
        best_err = torch.where(better, err, best_err)
    return best_s, best_z


def fit_qparams(weight: torch.Tensor, fmt: IntFormat, *, symmetric: bool = True, per_channel: bool = True,
                group_size: int | None = None, search: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale (float32) and zero point (``fmt.dtype``) for ``weight`` [out, ...]: shape [out] per channel or
    per tensor (one value repeated), [out, ceil(K / group_size)] per group. ``search`` fits the scales
    (below 8 bits); without it they are absmax / qmax or min-max, the 8-bit scheme."""
    w2 = weight.detach().float().reshape(weight.shape[0], -1)
    out, k = w2.shape
    rows, counts = _rows(w2, per_channel, group_size)
    step = max(1, _CHUNK // rows.shape[1])
    scales, zps = [], []
    for start in range(0, rows.shape[0], step):
        chunk, n = rows[start:start + step], counts[start:start + step]
        if symmetric:
            scale = _fit_symmetric(chunk, n, fmt, search)
            zp = torch.zeros_like(scale)
        else:
            scale, zp = _fit_asymmetric(chunk, fmt, search)
        scales.append(scale)
        zps.append(zp)
    scale, zp = torch.cat(scales), torch.cat(zps)
    # An all-zero row (a pruned filter) fits any scale. The tiny one its range implies would make the int32
    # bias's scale (input scale × weight scale) so small that the row's bias saturates int32, so such rows
    # share the layer's largest scale instead.
    empty = (rows == 0).all(dim=1) if rows.numel() else torch.zeros(0, dtype=torch.bool)
    if empty.any():
        fill = scale[~empty].max() if (~empty).any() else torch.tensor(1.0)
        scale = torch.where(empty, fill.to(scale.dtype), scale)
    scale = to_half_precision(scale, round_up=not search)
    if group_size is None:
        scale, zp = scale.expand(out).clone(), zp.expand(out).clone()
    else:
        scale, zp = scale.reshape(out, -1), zp.reshape(out, -1)
    return scale.float(), zp.to(fmt.dtype)


def to_half_precision(scale: torch.Tensor, *, round_up: bool = False) -> torch.Tensor:
    """Scales rounded to a float16 number (the nearest, or the next larger with ``round_up``) where that is a
    normal float16 (relative change below 2^-10). The exporter stores float16-valued scales in float16, which
    halves a visible share of the file: low-bit layers have a scale per 16–128 weights, and 1-D depthwise
    8-bit layers one per 3 weights."""
    half = scale.half()
    if round_up:
        below = half.float() < scale
        half = torch.where(below, torch.nextafter(half, torch.full_like(half, float("inf"))), half)
    half = half.float()
    normal = (scale.abs() >= _HALF_TINY) & torch.isfinite(half)
    return torch.where(normal, half, scale)


def quantize_weight(weight: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, fmt: IntFormat,
                    group_size: int | None = None) -> torch.Tensor:
    """The integer codes of ``weight`` for given scales (round half to even, like QuantizeLinear), in
    ``fmt.dtype`` with the weight's shape. Binary codes are the sign, with sign(0) = +1."""
    w2 = weight.detach().float().reshape(weight.shape[0], -1)
    k = w2.shape[1]
    s = expand_groups(scale.float(), k, group_size)
    z = expand_groups(zero_point.float(), k, group_size)
    return _codes(w2, s, z, fmt).to(fmt.dtype).reshape(weight.shape)
