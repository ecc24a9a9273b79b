"""The stages' data loops, in one place: pruning with fine-tuning between steps, fine-tuning, and
calibration for post-training quantization."""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from rich.progress import Progress
from torch import nn

from ..datasets import Dataset
from ..measure import fidelity, layer_sparsity, sparsity
from ..pruning import MaskedPruning, sparsity_at
from ..quantization import layer_summary, quantize
from ..training import evaluate_accuracy, fit, predict
from .plan import FinetuneStep, PruneStep, QuantizeStep


@dataclass
class RunContext:
    dataset: Dataset
    teacher: nn.Module  # the original model: the target when the data has no labels
    batch_size: int
    seed: int
    example_inputs: tuple[torch.Tensor, ...]
    progress: Progress | None = None

    def loss_fn(self):
        """Cross-entropy on labels, or, without labels, KL divergence to the original model's outputs."""
        if self.dataset.labelled:
            return None
        teacher = self.teacher

        def distill_from_original(model: nn.Module, x: torch.Tensor, _y) -> torch.Tensor:
            with torch.no_grad():
                target = F.softmax(teacher(x), dim=-1)
            return F.kl_div(F.log_softmax(model(x), dim=-1), target, reduction="batchmean")

        return distill_from_original

    def quality(self, model: nn.Module) -> dict:
        x, y = self.dataset.x_test, self.dataset.y_test
        if y is not None:
            return {"accuracy": evaluate_accuracy(model, x, y)}
        return {"fidelity_top1": fidelity(predict(self.teacher, x), predict(model, x))["top1_agreement"]}


def run_prune(model: nn.Module, step: PruneStep, ctx: RunContext) -> tuple[nn.Module, dict]:
    model = copy.deepcopy(model)
    pruner = MaskedPruning(model, step.config)
    history = []
    loss_fn = ctx.loss_fn()
    for i in range(1, step.steps + 1):
        target = sparsity_at(i, step.steps, step.config.sparsity, step.schedule)
        batches = (ctx.dataset.batches("train", batch_size=ctx.batch_size, shuffle=True, seed=ctx.seed + i)
                   if step.config.method == "gradient" else None)
        pruner.apply(target, pruner.scores(batches, loss_fn))
        if step.fine_tune_epochs:
            fit(model, ctx.dataset, epochs=step.fine_tune_epochs, lr=step.learning_rate, batch_size=ctx.batch_size,
                seed=ctx.seed + i, progress=ctx.progress, description=f"prune {i}/{step.steps}: fine-tune",
                on_step=pruner.reapply, loss_fn=loss_fn)
        history.append({"step": i, "target_sparsity": round(target, 4), **ctx.quality(model)})
    per_layer = pruner.finalize()
    return model, {"method": step.config.method, "scope": step.config.scope, "steps": step.steps,
                   "schedule": step.schedule, "sparsity": sparsity(model), "layer_sparsity": per_layer,
                   "history": history}


def run_finetune(model: nn.Module, step: FinetuneStep, ctx: RunContext) -> tuple[nn.Module, dict]:
    model = copy.deepcopy(model)
    # Weights that are exactly zero were pruned: keep them zero while fine-tuning.
    masks = {n: p != 0 for n, p in model.named_parameters() if p.dim() >= 2}

    @torch.no_grad()
    def keep_zeros() -> None:
        for n, p in model.named_parameters():
            if n in masks:
                p.mul_(masks[n])

    losses = fit(model, ctx.dataset, epochs=step.epochs, lr=step.learning_rate, batch_size=ctx.batch_size,
                 seed=ctx.seed, progress=ctx.progress, description="fine-tune", on_step=keep_zeros,
                 loss_fn=ctx.loss_fn())
    return model, {"epochs": step.epochs, "final_loss": losses[-1] if losses else None,
                   "layer_sparsity": layer_sparsity(model), **ctx.quality(model)}


def run_quantize(model: nn.Module, step: QuantizeStep, ctx: RunContext) -> tuple[nn.Module, dict]:
    n = min(step.calibration_samples, ctx.dataset.x_train.shape[0])
    calibration = ctx.dataset.calibration_inputs(n, seed=ctx.seed)
    started = time.perf_counter()
    qmodel = quantize(model, step.config, calibration=calibration, example_inputs=ctx.example_inputs,
                      progress=ctx.progress)
    return qmodel, {"scheme": "int8", "calibration_samples": n, "observer": step.config.observer,
                    "per_channel": step.config.per_channel, "activation_dtype": step.config.activation_dtype,
                    "weight_bits": 7 if step.config.reduce_range else 8, "note": step.note,
                    "quantize_seconds": round(time.perf_counter() - started, 3),
                    "layers": layer_summary(qmodel), **ctx.quality(qmodel)}


def run_step(model: nn.Module, step, ctx: RunContext) -> tuple[nn.Module, dict]:
    runner = {PruneStep: run_prune, FinetuneStep: run_finetune, QuantizeStep: run_quantize}[type(step)]
    return runner(model, step, ctx)
