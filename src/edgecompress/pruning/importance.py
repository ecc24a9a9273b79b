"""Importance scores per weight: the lower the score, the earlier the weight is pruned."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn

from ..errors import DataError

LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor | None], torch.Tensor]


def magnitude_scores(layers: dict[str, nn.Module]) -> dict[str, torch.Tensor]:
    return {name: m.weight.detach().abs() for name, m in layers.items()}


def random_scores(layers: dict[str, nn.Module], seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {name: torch.rand(m.weight.shape, generator=g) for name, m in layers.items()}


def taylor_scores(model: nn.Module, layers: dict[str, nn.Module],
                  batches: Iterable[tuple[torch.Tensor, torch.Tensor | None]], loss_fn: LossFn | None = None
                  ) -> dict[str, torch.Tensor]:
    """First-order Taylor estimate of the loss change when a weight is removed, |w · ∂L/∂w|, with the
    gradient accumulated over ``batches`` (Molchanov et al., 2019)."""
    grads = {name: torch.zeros_like(m.weight) for name, m in layers.items()}
    was_training = model.training
    model.eval()  # BN statistics must not move while we only measure gradients
    seen = 0
    for x, y in batches:
        if y is None and loss_fn is None:
            raise DataError("gradient (Taylor) importance needs labelled data or a loss function")
        model.zero_grad(set_to_none=True)
        out = model(x)
        loss = loss_fn(model, x, y) if loss_fn else nn.functional.cross_entropy(out, y)
        loss.backward()
        for name, m in layers.items():
            if m.weight.grad is not None:
                grads[name] += m.weight.grad.detach()
        seen += 1
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    if seen == 0:
        raise DataError("gradient (Taylor) importance needs at least one batch of data")
    return {name: (m.weight.detach() * grads[name] / seen).abs() for name, m in layers.items()}
