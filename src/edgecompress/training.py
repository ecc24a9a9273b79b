"""The one training loop: fine-tuning in the pipeline and training of the reference models both run here,
so seeding, schedules and per-step hooks behave the same everywhere."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from rich.progress import Progress
from torch import nn

from .datasets import Dataset
from .errors import DataError, EdgeCompressError, RecipeError
from .progress import tracked

LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor | None], torch.Tensor]
SCHEDULES = ("cosine", "constant")


def fit(model: nn.Module, dataset: Dataset, *, epochs: int, lr: float = 1e-3, batch_size: int = 128,
        weight_decay: float = 0.0, seed: int = 0, schedule: str = "cosine", progress: Progress | None = None,
        description: str = "train", on_step: Callable[[], None] | None = None, loss_fn: LossFn | None = None
        ) -> list[float]:
    """Train ``model`` in place with AdamW on the train split; return the mean loss of each epoch.

    The learning rate decays per step along a cosine to zero (``schedule="cosine"``) or stays constant.
    ``on_step()`` runs after every optimizer step (pruning re-applies its masks there); ``loss_fn(model, x, y)``
    replaces cross-entropy (distillation, unlabelled data). Runs repeat exactly for a given ``seed``, and the
    global torch generator is left as it was. The model is left in eval mode."""
    _check_settings(epochs, lr, batch_size, weight_decay, schedule)
    if loss_fn is None and not dataset.labelled:
        raise DataError(f"fine-tuning needs labels, and {dataset.name} has none; give labelled data or a loss_fn "
                        "that needs no labels (e.g. distillation from the original model)")
    if epochs == 0:
        model.eval()
        return []
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise RecipeError(f"{type(model).__name__} has no trainable parameters to fine-tune")
    loss_fn = loss_fn or _cross_entropy
    steps_per_epoch = len(_batch_sizes(dataset.x_train.shape[0], batch_size))
    total_steps = epochs * steps_per_epoch
    device = params[0].device
    sums = [0.0] * epochs
    counts = [0] * epochs
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_factor(schedule, total_steps))
        model.train()
        try:
            steps = _steps(dataset, epochs, batch_size, seed)
            for step, (epoch, x, y) in enumerate(tracked(steps, progress, description, total_steps)):
                x, y = x.to(device), None if y is None else y.to(device)
                loss = loss_fn(model, x, y)
                if not torch.isfinite(loss):
                    raise EdgeCompressError(f"training diverged at epoch {epoch + 1}, step {step + 1}: the loss is "
                                            f"{loss.item()}; lower the learning rate (lr={lr})")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                if on_step is not None:
                    on_step()
                sums[epoch] += loss.item() * x.shape[0]
                counts[epoch] += x.shape[0]
        finally:
            model.eval()
    return [s / c for s, c in zip(sums, counts, strict=True)]


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, *, batch_size: int = 512) -> torch.Tensor:
    """Logits for ``x`` in eval mode, computed in batches; the model's train/eval mode is restored after."""
    if batch_size < 1:
        raise RecipeError(f"batch_size must be at least 1, got {batch_size}")
    if x.shape[0] == 0:
        raise DataError("cannot predict on an empty tensor (0 samples)")
    was_training = model.training
    model.eval()
    try:
        return torch.cat([model(x[start:start + batch_size]) for start in range(0, x.shape[0], batch_size)])
    finally:
        model.train(was_training)


def evaluate_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, batch_size: int = 512) -> float:
    """Top-1 accuracy in [0, 1]."""
    if y.dim() != 1 or y.shape[0] != x.shape[0]:
        raise DataError(f"accuracy needs one label per sample: {x.shape[0]} samples but labels of shape "
                        f"{tuple(y.shape)}")
    predictions = predict(model, x, batch_size=batch_size).argmax(-1)
    return (predictions == y.to(predictions.device)).float().mean().item()


def _cross_entropy(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
    return F.cross_entropy(model(x), y)


def _check_settings(epochs: int, lr: float, batch_size: int, weight_decay: float, schedule: str) -> None:
    if epochs < 0:
        raise RecipeError(f"epochs must be 0 or more, got {epochs}")
    if not lr > 0 or not math.isfinite(lr):
        raise RecipeError(f"the learning rate must be a positive number, got {lr}")
    if batch_size < 1:
        raise RecipeError(f"batch_size must be at least 1, got {batch_size}")
    if not weight_decay >= 0:
        raise RecipeError(f"weight_decay must be 0 or more, got {weight_decay}")
    if schedule not in SCHEDULES:
        raise RecipeError(f"unknown learning-rate schedule {schedule!r}; allowed: {', '.join(SCHEDULES)}")


def _lr_factor(schedule: str, total_steps: int) -> Callable[[int], float]:
    if schedule == "constant":
        return lambda step: 1.0
    return lambda step: 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / total_steps))


def _batch_sizes(n: int, batch_size: int) -> list[int]:
    """Sizes of one epoch's batches. A trailing batch of one sample is dropped when there are others:
    batch norm cannot normalise a single sample, and one sample per epoch does not matter."""
    sizes = [min(batch_size, n - start) for start in range(0, n, batch_size)]
    return sizes[:-1] if len(sizes) > 1 and sizes[-1] == 1 else sizes


def _steps(dataset: Dataset, epochs: int, batch_size: int, seed: int
           ) -> Iterator[tuple[int, torch.Tensor, torch.Tensor | None]]:
    steps_per_epoch = len(_batch_sizes(dataset.x_train.shape[0], batch_size))
    for epoch in range(epochs):
        batches = dataset.batches("train", batch_size=batch_size, shuffle=True, seed=seed + epoch)
        for _, (x, y) in zip(range(steps_per_epoch), batches, strict=False):
            yield epoch, x, y
