"""Lottery ticket search (P5): iterative magnitude pruning with weight rewinding (Frankle & Carbin, 2019; with
rewinding to an early training step, Frankle et al., 2020, "Linear mode connectivity and the lottery ticket
hypothesis").

    snapshot the weights after ``rewind_steps`` optimizer steps of the first round (0: before any)
    for each round r = 1 … R:
        train the masked network;  prune to the round's sparsity (magnitude, masks only grow)
        reset every surviving weight to its snapshot value (the "winning ticket" initialisation)
    train the final ticket

Training is the caller's (``train(model, on_step)`` trains one round and calls ``on_step()`` after every
optimizer step), so the pipeline's loop, data and progress bars serve here too."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import RecipeError
from .config import PruneConfig
from .schedule import sparsity_at
from .unstructured import MaskedPruning

TrainRound = Callable[[nn.Module, Callable[[], None]], None]


@dataclass(frozen=True)
class TicketRound:
    round: int
    sparsity: float  # after this round's pruning


def find_ticket(model: nn.Module, config: PruneConfig, train: TrainRound, *, rounds: int, rewind_steps: int = 0,
                schedule: str = "exponential", on_round: Callable[[nn.Module, TicketRound], None] | None = None
                ) -> tuple[nn.Module, list[TicketRound]]:
    """A pruned copy of ``model`` at ``config.sparsity`` found by ``rounds`` rounds of train → prune → rewind,
    then trained from its rewound weights (rounds + 1 trainings in all). ``on_round`` sees the model after each
    round's rewind (for reports)."""
    if rounds < 2:
        raise RecipeError(f"a lottery ticket needs at least 2 rounds of train → prune → rewind, got {rounds}")
    if rewind_steps < 0:
        raise RecipeError(f"rewind_steps must be >= 0, got {rewind_steps}")
    model = copy.deepcopy(model)
    pruner = MaskedPruning(model, config)
    snapshot: dict[str, torch.Tensor] = {}
    steps = 0

    def take_snapshot() -> None:
        snapshot.update({n: m.weight.detach().clone() for n, m in pruner.layers.items()})

    def on_step() -> None:
        nonlocal steps
        pruner.reapply()
        steps += 1
        if steps == rewind_steps:
            take_snapshot()

    if rewind_steps == 0:
        take_snapshot()
    history = []
    for r in range(1, rounds + 1):
        train(model, on_step)
        if not snapshot:
            raise RecipeError(f"rewind_steps={rewind_steps} is beyond the {steps} optimizer steps of the first "
                              "round; rewind to an earlier step")
        pruner.apply(sparsity_at(r, rounds, config.sparsity, schedule))
        _rewind(pruner, snapshot)
        history.append(TicketRound(r, 1.0 - _kept_fraction(pruner)))
        if on_round is not None:
            on_round(model, history[-1])
    train(model, pruner.reapply)  # the ticket, trained from its rewound weights
    pruner.finalize()
    return model, history


@torch.no_grad()
def _rewind(pruner: MaskedPruning, snapshot: dict[str, torch.Tensor]) -> None:
    """Surviving weights back to their snapshot values; pruned ones stay zero. Biases and batch-norm keep their
    trained values (the tickets of the rewinding papers reset weights only)."""
    for name, layer in pruner.layers.items():
        layer.weight.copy_(snapshot[name] * pruner.masks[name])


def _kept_fraction(pruner: MaskedPruning) -> float:
    kept = sum(int(m.sum()) for m in pruner.masks.values())
    return kept / sum(m.numel() for m in pruner.masks.values())
