"""Latency percentiles of a callable, and of a PyTorch model in eager mode as the reference point."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from ..errors import RecipeError

MIN_TIMED = 5  # fewer samples make p90/p99 meaningless, so the time budget never cuts below this


def _check_settings(warmup: int, iters: int, max_seconds: float) -> None:
    if not isinstance(warmup, int) or warmup < 0:
        raise RecipeError(f"warmup must be an integer ≥ 0, got {warmup!r}")
    if not isinstance(iters, int) or iters < 1:
        raise RecipeError(f"iters must be an integer ≥ 1, got {iters!r}")
    if not max_seconds > 0:
        raise RecipeError(f"max_seconds must be > 0, got {max_seconds!r}")


def measure_latency(fn: Callable[[], object], *, warmup: int = 10, iters: int = 50,
                    max_seconds: float = 10.0) -> dict:
    """Call ``fn`` ``warmup`` times untimed, then up to ``iters`` times timed one by one. Both phases stop
    once ``max_seconds`` have passed, but at least min(5, iters) calls are always timed. Returns p50,
    p90, p99, mean and min in milliseconds and ``iters``, the number of calls actually timed. The
    garbage collector is paused while timing so that its pauses do not land in one sample."""
    _check_settings(warmup, iters, max_seconds)
    deadline = time.perf_counter_ns() + int(max_seconds * 1e9)
    for _ in range(warmup):
        if time.perf_counter_ns() >= deadline:
            break
        fn()
    floor = min(MIN_TIMED, iters)
    samples: list[int] = []
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        while len(samples) < iters and (len(samples) < floor or time.perf_counter_ns() < deadline):
            start = time.perf_counter_ns()
            fn()
            samples.append(time.perf_counter_ns() - start)
    finally:
        if gc_was_enabled:
            gc.enable()
    ms = np.asarray(samples, dtype=np.float64) / 1e6
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    return {"p50": float(p50), "p90": float(p90), "p99": float(p99), "mean": float(ms.mean()),
            "min": float(ms.min()), "iters": len(samples)}


def torch_latency(model: nn.Module, inputs: tuple | torch.Tensor, *, threads: int | None, **kw) -> dict:
    """``measure_latency`` of ``model(*inputs)`` in eager PyTorch under no_grad and eval mode, with
    ``torch.set_num_threads(threads)`` for the measurement (None: leave the current setting). The thread
    count and each module's train/eval mode are restored afterwards. ``kw`` go to ``measure_latency``."""
    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise RecipeError(f"threads must be an integer ≥ 1 or None, got {threads!r}")
    args = inputs if isinstance(inputs, tuple) else (inputs,)
    modes = {m: m.training for m in model.modules()}
    previous_threads = torch.get_num_threads()
    model.eval()
    try:
        if threads is not None:
            torch.set_num_threads(threads)
        with torch.no_grad():
            return measure_latency(lambda: model(*args), **kw)
    finally:
        torch.set_num_threads(previous_threads)
        for module, training in modes.items():
            module.training = training
