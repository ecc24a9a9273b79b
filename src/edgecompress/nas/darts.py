"""Differentiable architecture search (N2; DARTS, Liu et al., 2019) on 1-D signals.

``search(dataset, config)`` carves a validation split out of the training data (the test split is only used
for the final accuracy), alternates architecture steps on validation batches with weight steps on training
batches (the first-order approximation of the bilevel problem: the weights are taken as already optimal when
α is updated, ξ = 0 in the paper), derives the discrete network from α, trains it from scratch on the whole
training split with ``training.fit`` and reports its test accuracy."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from rich.progress import Progress
from torch import nn

from ..datasets import Dataset
from ..errors import DataError, RecipeError
from ..progress import tracked
from ..training import evaluate_accuracy, fit
from .blocks import check_count
from .cells import DerivedNetwork, SearchNetwork
from .genotype import Genotype, parse_alphas
from .ops import DEFAULT_OPS, check_ops

Batch = tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class DartsConfig:
    """Search: ``epochs`` of bilevel optimisation of a network of ``cells`` cells (``nodes`` nodes each,
    ``channels`` in the first cell) over ``ops``; weights by SGD with momentum 0.9 and a cosine schedule from
    ``lr``, α by Adam (β = 0.5, 0.999) at ``arch_lr`` (DARTS uses 3e-4 over 50 epochs; the default suits short
    searches). ``val_fraction`` of the training split becomes the validation split that α is fitted on.
    Evaluation: the derived network (``train_cells`` / ``train_channels``, None: as searched) is trained from
    scratch for ``train_epochs`` with AdamW at ``train_lr`` on the whole training split."""

    epochs: int = 10
    cells: int = 3
    channels: int = 8
    nodes: int = 4
    ops: tuple[str, ...] = DEFAULT_OPS
    lr: float = 0.05
    weight_decay: float = 3e-4
    arch_lr: float = 3e-3
    arch_weight_decay: float = 1e-3
    batch_size: int = 64
    val_fraction: float = 0.5
    grad_clip: float = 5.0
    train_epochs: int = 30
    train_lr: float = 5e-3
    train_weight_decay: float = 1e-2
    train_cells: int | None = None
    train_channels: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "ops", check_ops(tuple(self.ops) if isinstance(self.ops, list) else self.ops))
        check_count("epochs", self.epochs, minimum=0)
        check_count("train_epochs", self.train_epochs, minimum=0)
        for name in ("cells", "channels", "nodes", "batch_size"):
            check_count(name, getattr(self, name))
        for name in ("train_cells", "train_channels"):
            if getattr(self, name) is not None:
                check_count(name, getattr(self, name))
        for name in ("lr", "arch_lr", "train_lr", "grad_clip"):
            _check_number(name, getattr(self, name), positive=True)
        for name in ("weight_decay", "arch_weight_decay", "train_weight_decay"):
            _check_number(name, getattr(self, name), positive=False)
        _check_number("val_fraction", self.val_fraction, positive=True)
        if not self.val_fraction < 1.0:
            raise RecipeError(f"val_fraction {self.val_fraction!r} is out of range; allowed: 0 < val_fraction < 1")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise RecipeError(f"seed must be a whole number, got {self.seed!r}")


def _check_number(name: str, value: object, *, positive: bool) -> None:
    ok = not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value) and (
        value > 0 if positive else value >= 0)
    if not ok:
        raise RecipeError(f"{name} {value!r} is out of range; allowed: a finite number "
                          f"{'> 0' if positive else '>= 0'}")


@dataclass(frozen=True)
class DartsResult:
    """``alphas_history``: softmax(α) per edge (edges × ops) of both cell kinds, before the search and after
    each epoch; ``losses``: mean (train, validation) loss of each search epoch; ``model``: the derived network,
    trained; ``accuracy``: its top-1 accuracy on the test split."""

    genotype: Genotype
    alphas_history: tuple[dict[str, torch.Tensor], ...]
    model: DerivedNetwork
    accuracy: float
    ops: tuple[str, ...]
    losses: tuple[tuple[float, float], ...] = field(default_factory=tuple)
    search_seconds: float = 0.0
    train_seconds: float = 0.0


def bilevel_step(network: SearchNetwork, train_batch: Batch, val_batch: Batch,
                 weight_optimizer: torch.optim.Optimizer, arch_optimizer: torch.optim.Optimizer, *,
                 grad_clip: float = 5.0) -> tuple[float, float]:
    """One first-order DARTS step: α ← α − ∇_α L_val(w, α), then w ← w − ∇_w L_train(w, α).

    Each gradient is taken with respect to its own parameters only, so α never sees a training batch and the
    weights never see a validation batch; afterwards ``.grad`` holds exactly those two gradients. Returns the
    (train, validation) losses."""
    arch, weights = network.arch_parameters(), network.weights()
    network.train()
    x_val, y_val = val_batch
    val_loss = F.cross_entropy(network(x_val), y_val)
    # allow_unused: a network of reduction cells only (cells <= 2) has no use for alphas_normal
    for p, g in zip(arch, torch.autograd.grad(val_loss, arch, allow_unused=True), strict=True):
        p.grad = g
    arch_optimizer.step()
    x_train, y_train = train_batch
    train_loss = F.cross_entropy(network(x_train), y_train)
    grads = torch.autograd.grad(train_loss, weights, allow_unused=True)
    for p, g in zip(weights, grads, strict=True):
        p.grad = g
    nn.utils.clip_grad_norm_(weights, grad_clip)
    weight_optimizer.step()
    return train_loss.item(), val_loss.item()


def _check_data(dataset: Dataset) -> int:
    if not isinstance(dataset, Dataset):
        raise DataError(f"DARTS searches on an edgecompress Dataset, got {type(dataset).__name__}; "
                        "load one with edgecompress.datasets.load_dataset")
    if not dataset.labelled:
        raise DataError(f"DARTS needs labelled data, and {dataset.name} has none")
    if dataset.x_train.dim() != 3:
        raise DataError(f"the DARTS search space is for 1-D signals (batch, channels, length); {dataset.name} "
                        f"has samples of shape {dataset.sample_shape}")
    return dataset.num_classes or int(max(dataset.y_train.max(), dataset.y_test.max())) + 1


def split_validation(dataset: Dataset, fraction: float, seed: int) -> tuple[Batch, Batch]:
    """A seeded random split of the training data into (train, validation) tensors; the test split is untouched."""
    n = dataset.x_train.shape[0]
    n_val = round(n * fraction)
    if not 2 <= n_val <= n - 2:
        raise DataError(f"{dataset.name}: val_fraction {fraction} of {n} training samples leaves {n_val} for "
                        f"validation and {n - n_val} for training; each needs at least 2")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    val, train = order[:n_val], order[n_val:]
    return (dataset.x_train[train], dataset.y_train[train]), (dataset.x_train[val], dataset.y_train[val])


def _batches(x: torch.Tensor, y: torch.Tensor, batch_size: int, seed: int) -> list[Batch]:
    order = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))
    batches = [(x[order[s:s + batch_size]], y[order[s:s + batch_size]]) for s in range(0, x.shape[0], batch_size)]
    return batches[:-1] if len(batches) > 1 and batches[-1][0].shape[0] == 1 else batches  # BN needs 2 samples


def _snapshot(network: SearchNetwork) -> dict[str, torch.Tensor]:
    return {"normal": torch.softmax(network.alphas_normal.detach(), -1).clone(),
            "reduce": torch.softmax(network.alphas_reduce.detach(), -1).clone()}


def derive(network: SearchNetwork) -> Genotype:
    """The discrete architecture: on each edge the strongest operation other than 'none', two input edges kept
    per node (the strongest)."""
    return Genotype(normal=parse_alphas(network.alphas_normal, network.ops, network.nodes),
                    reduce=parse_alphas(network.alphas_reduce, network.ops, network.nodes))


def search_architecture(dataset: Dataset, config: DartsConfig, *, progress: Progress | None = None
                        ) -> tuple[SearchNetwork, tuple[dict[str, torch.Tensor], ...], tuple[tuple[float, float], ...]]:
    """The search alone: the search network after ``config.epochs`` of bilevel optimisation, the softmax(α)
    history and the mean (train, validation) loss of each epoch. The global torch generator is left as it was."""
    num_classes = _check_data(dataset)
    train, val = split_validation(dataset, config.val_fraction, config.seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        network = SearchNetwork(in_channels=dataset.x_train.shape[1], num_classes=num_classes,
                                channels=config.channels, cells=config.cells, nodes=config.nodes, ops=config.ops,
                                input_length=dataset.x_train.shape[2])
        weight_optimizer = torch.optim.SGD(network.weights(), lr=config.lr, momentum=0.9,
                                           weight_decay=config.weight_decay)
        arch_optimizer = torch.optim.Adam(network.arch_parameters(), lr=config.arch_lr, betas=(0.5, 0.999),
                                          weight_decay=config.arch_weight_decay)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(weight_optimizer, max(1, config.epochs))
        history, losses = [_snapshot(network)], []
        for epoch in tracked(range(config.epochs), progress, "DARTS search (epochs)"):
            seed = config.seed + 1000 * (epoch + 1)
            pairs = list(zip(_batches(*train, config.batch_size, seed), _batches(*val, config.batch_size, seed + 1),
                             strict=False))
            sums = [0.0, 0.0]
            for train_batch, val_batch in pairs:
                step = bilevel_step(network, train_batch, val_batch, weight_optimizer, arch_optimizer,
                                    grad_clip=config.grad_clip)
                if not all(math.isfinite(v) for v in step):
                    raise RecipeError(f"the DARTS search diverged at epoch {epoch + 1}: losses {step}; lower lr "
                                      f"({config.lr}) or arch_lr ({config.arch_lr})")
                sums = [s + v for s, v in zip(sums, step, strict=True)]
            schedule.step()
            losses.append((sums[0] / len(pairs), sums[1] / len(pairs)))
            history.append(_snapshot(network))
    network.eval()
    return network, tuple(history), tuple(losses)


def train_derived(genotype: Genotype, dataset: Dataset, config: DartsConfig, *, progress: Progress | None = None
                  ) -> DerivedNetwork:
    """The discrete network of ``genotype``, trained from scratch on the whole training split."""
    num_classes = _check_data(dataset)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = DerivedNetwork(genotype, in_channels=dataset.x_train.shape[1], num_classes=num_classes,
                               channels=config.train_channels or config.channels,
                               cells=config.train_cells or config.cells, input_length=dataset.x_train.shape[2])
    fit(model, dataset, epochs=config.train_epochs, lr=config.train_lr, batch_size=config.batch_size,
        weight_decay=config.train_weight_decay, seed=config.seed, progress=progress,
        description="train the derived network")
    return model


def search(dataset: Dataset, config: DartsConfig | None = None, *, progress: Progress | None = None
           ) -> DartsResult:
    """Search, derive, train the derived network from scratch and measure its test accuracy."""
    config = config or DartsConfig()
    started = time.perf_counter()
    network, history, losses = search_architecture(dataset, config, progress=progress)
    genotype = derive(network)
    searched = time.perf_counter()
    model = train_derived(genotype, dataset, config, progress=progress)
    trained = time.perf_counter()
    accuracy = evaluate_accuracy(model, dataset.x_test, dataset.y_test)
    return DartsResult(genotype=genotype, alphas_history=history, model=model, accuracy=accuracy, ops=config.ops,
                       losses=losses, search_seconds=searched - started, train_seconds=trained - searched)
