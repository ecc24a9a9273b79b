"""The stages' data loops, in one place: pruning with fine-tuning between steps, fine-tuning, and
calibration for post-training quantization."""

from __future__ import annotations

import copy
import dataclasses
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from rich.progress import Progress
from torch import nn

from ..clustering import ClusteredTraining
from ..datasets import Dataset
from ..distillation import Distiller, check_student, kd_loss, make_student
from ..lowrank import factorize
from ..measure import count_params, fidelity, layer_sparsity, sparsity
from ..model_io import load_model
from ..pruning import MaskedPruning, sparsity_at
from ..pruning.lottery import TicketRound, find_ticket
from ..pruning.structured import prune_structured
from ..pruning.structured_config import StructuredPruneConfig
from ..quantization import DynamicConfig, QuantConfig, layer_summary, quantize, quantize_dynamic
from ..quantization.fp16 import HalfPrecision
from ..quantization.inputs import calibration_batches
from ..quantization.mixed import plan_mixed_precision
from ..quantization.ptq import smoothed_for
from ..quantization.qat import QATConfig, QuantizationAwareTraining
from ..training import evaluate_accuracy, fit, predict
from .plan import ClusterStep, DistillStep, FactorizeStep, FinetuneStep, PruneStep, QuantizeStep


@dataclass
class RunContext:
    dataset: Dataset
    teacher: nn.Module  # the original model: the target when the data has no labels
    batch_size: int
    seed: int
    example_inputs: tuple[torch.Tensor, ...]
    progress: Progress | None = None
    distill: tuple[float, float] | None = None  # (temperature, alpha): fine-tuning distils from the teacher

    def loss_fn(self):
        """Cross-entropy on labels; with ``distill``, the KD loss against the original model and the labels;
        without labels, KL divergence to the original model's outputs."""
        teacher = self.teacher
        if self.dataset.labelled and self.distill is not None:
            temperature, alpha = self.distill

            def knowledge_distillation(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
                with torch.no_grad():
                    target = teacher(x)
                return kd_loss(model(x), target, y, temperature=temperature, alpha=alpha)

            return knowledge_distillation
        if self.dataset.labelled:
            return None

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
    if isinstance(step.config, StructuredPruneConfig):
        return _run_structured(model, step, ctx)
    if step.rewind:
        return _run_lottery_ticket(model, step, ctx)
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


def _run_structured(model: nn.Module, step: PruneStep, ctx: RunContext) -> tuple[nn.Module, dict]:
    """Channels removed in ``step.steps`` steps along the schedule (each step's ratio is relative to the widths
    left by the previous one), fine-tuned after each; the model gets physically smaller."""
    config, loss_fn = step.config, ctx.loss_fn()
    history, previous = [], 0.0
    params_before = macs_before = None
    for i in range(1, step.steps + 1):
        target = sparsity_at(i, step.steps, config.ratio, step.schedule)
        relative = 1.0 - (1.0 - target) / (1.0 - previous)
        data = (ctx.dataset.batches("train", batch_size=ctx.batch_size, shuffle=True, seed=ctx.seed + i)
                if config.importance == "taylor" else None)
        result = prune_structured(model, dataclasses.replace(config, ratio=relative),
                                  example_inputs=ctx.example_inputs, data=data)
        params_before = params_before or result.params_before
        macs_before = macs_before or result.macs_before
        model, previous = result.model, target
        if step.fine_tune_epochs:
            fit(model, ctx.dataset, epochs=step.fine_tune_epochs, lr=step.learning_rate, batch_size=ctx.batch_size,
                seed=ctx.seed + i, progress=ctx.progress, description=f"prune {i}/{step.steps}: fine-tune",
                loss_fn=loss_fn)
        history.append({"step": i, "target_ratio": round(target, 4), "params": result.params_after,
                        "macs": result.macs_after, **ctx.quality(model)})
    return model, {"method": "structured", "importance": config.importance, "scope": config.scope,
                   "steps": step.steps, "schedule": step.schedule, "ratio": config.ratio,
                   "params_before": params_before, "params_after": history[-1]["params"],
                   "macs_before": macs_before, "macs_after": history[-1]["macs"], "history": history}


def _run_lottery_ticket(model: nn.Module, step: PruneStep, ctx: RunContext) -> tuple[nn.Module, dict]:
    loss_fn, rounds = ctx.loss_fn(), []

    def train(m: nn.Module, on_step) -> None:
        n = len(rounds) + 1
        label = f"lottery round {n}/{step.steps}: train" if n <= step.steps else "lottery ticket: train"
        fit(m, ctx.dataset, epochs=step.fine_tune_epochs, lr=step.learning_rate, batch_size=ctx.batch_size,
            seed=ctx.seed + n, progress=ctx.progress, description=label, on_step=on_step, loss_fn=loss_fn)

    def on_round(m: nn.Module, r: TicketRound) -> None:
        rounds.append({"round": r.round, "sparsity": round(r.sparsity, 4)})

    ticket, _ = find_ticket(model, step.config, train, rounds=step.steps, rewind_steps=step.rewind_steps,
                            schedule=step.schedule, on_round=on_round)
    return ticket, {"method": step.config.method, "lottery_ticket": True, "rounds": step.steps,
                    "rewind_steps": step.rewind_steps, "schedule": step.schedule, "sparsity": sparsity(ticket),
                    "layer_sparsity": layer_sparsity(ticket), "history": rounds, **ctx.quality(ticket)}


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
    started = time.perf_counter()
    if step.method == "fp16":
        qmodel = HalfPrecision(model)
        info = {"scheme": "fp16"}
    elif step.method == "dynamic":  # activation ranges are measured at run time; calibration only to smooth
        cfg = step.config
        if cfg.smoothing:
            model, cfg = smoothed_for(model, cfg, calibration_batches(_calibration(step, ctx)))
        qmodel = quantize_dynamic(model, DynamicConfig(per_channel=cfg.per_channel, ignore=cfg.ignore,
                                                       reduce_range=cfg.reduce_range))
        info = {"scheme": "int8", "method": "dynamic", "per_channel": cfg.per_channel,
                "weight_bits": 7 if cfg.reduce_range else 8, "smoothing": cfg.smoothing, "note": step.note}
    else:
        calibration = _calibration(step, ctx)
        n = calibration.shape[0]
        cfg, extra = step.config, {}
        if step.method == "qat":
            if cfg.smoothing:  # QAT starts from the smoothed model, so training keeps the flattened inputs
                model, cfg = smoothed_for(model, cfg, calibration_batches(calibration))
            qmodel, extra["qat"] = _quantization_aware_training(model, dataclasses.replace(step, config=cfg),
                                                                ctx, calibration)
        else:
            if step.method == "mixed":
                cfg, extra["mixed"] = _mixed_precision_config(model, step, ctx, calibration, n)
            qmodel = quantize(model, cfg, calibration=calibration, example_inputs=ctx.example_inputs,
                              progress=ctx.progress)
        info = {"scheme": step.params.type, "method": step.method, "calibration_samples": n,
                "observer": cfg.observer, "per_channel": cfg.per_channel, "weight_only": cfg.weight_only,
                "activation_dtype": None if cfg.weight_only else cfg.activation_dtype,
                "weight_bits": 7 if cfg.reduce_range and cfg.weight_bits == 8 else cfg.weight_bits,
                "group_size": cfg.group_size, "equalization": cfg.equalization,
                "bias_correction": cfg.bias_correction, "adaround": cfg.adaround, "smoothing": cfg.smoothing,
                "smoothing_alpha": "auto" if cfg.smoothing_alpha is None else cfg.smoothing_alpha, "note": step.note,
                "layers": layer_summary(qmodel), **extra}
    info["quantize_seconds"] = round(time.perf_counter() - started, 3)
    return qmodel, {**info, **ctx.quality(qmodel)}


def _calibration(step: QuantizeStep, ctx: RunContext) -> torch.Tensor:
    n = min(step.calibration_samples, ctx.dataset.x_train.shape[0])
    return ctx.dataset.calibration_inputs(n, seed=ctx.seed)


def _quantization_aware_training(model: nn.Module, step: QuantizeStep, ctx: RunContext,
                                 calibration: torch.Tensor) -> tuple[nn.Module, dict]:
    """Start from the calibrated PTQ scales, train weights and (LSQ) scales, convert to the integer model."""
    cfg, params = step.config, step.params
    weight_format = {"ternary": "ternary", "binary": "binary"}.get(params.type, "int")
    config = QATConfig(bits=None if weight_format != "int" else cfg.weight_bits, per_channel=cfg.per_channel,
                       learn_scales=params.qat.learn_scales, weight_format=weight_format,
                       epochs=params.qat.epochs, learning_rate=params.qat.learning_rate,
                       reduce_range=cfg.reduce_range and cfg.weight_bits == 8, ignore=cfg.ignore)
    qat = QuantizationAwareTraining(model, config, calibration=calibration, example_inputs=ctx.example_inputs,
                                    steps_per_epoch=ctx.dataset.num_batches("train", ctx.batch_size),
                                    progress=ctx.progress)
    losses = fit(qat.model, ctx.dataset, epochs=config.epochs, lr=config.learning_rate, batch_size=ctx.batch_size,
                 seed=ctx.seed, progress=ctx.progress, description="quantization-aware training",
                 on_step=qat.step, loss_fn=ctx.loss_fn())
    return qat.finalize(), {"epochs": config.epochs, "learning_rate": config.learning_rate,
                            "learn_scales": config.learn_scales, "weight_format": weight_format,
                            "final_loss": losses[-1] if losses else None}


def _mixed_precision_config(model: nn.Module, step: QuantizeStep, ctx: RunContext, calibration: torch.Tensor,
                            n: int) -> tuple[QuantConfig, dict]:
    """Per-layer bit-widths from the sensitivity analysis; layers given 16 bits stay float."""
    mixed = step.params.mixed
    plan = plan_mixed_precision(model, step.config, calibration, size_budget=mixed.size_budget, bits=mixed.bits,
                                metric=mixed.metric, labels=ctx.dataset.calibration_labels(n, seed=ctx.seed),
                                example_inputs=ctx.example_inputs)
    floats = tuple(name for name, b in plan.layer_bits.items() if b == 16)
    config = dataclasses.replace(
        step.config, layer_bits=tuple((name, b) for name, b in plan.layer_bits.items() if b != 16),
        ignore=(*step.config.ignore, *floats))
    return config, plan.to_dict()


def run_distill(model: nn.Module, step: DistillStep, ctx: RunContext) -> tuple[nn.Module, dict]:
    """The model so far is the teacher; the student (built from it, or the user's factory) is trained with the
    distillation loss and becomes the model of the stages that follow. With assistants, each link of the chain
    teacher → assistant(s) → student learns from the one before it (D4)."""
    teacher = model
    if step.factory is not None:
        student = load_model(step.factory).model.train()
    else:
        student = make_student(teacher, width=step.width, depth=step.depth, seed=ctx.seed)
    chain = [make_student(teacher, width=w, depth=step.depth, seed=ctx.seed) for w in step.assistant_widths]
    chain.append(student)
    config, current, losses, links = step.config, teacher, [], []
    for i, learner in enumerate(chain, start=1):
        check_student(current, learner, example_inputs=ctx.example_inputs)
        label = "distill" if len(chain) == 1 else f"distill {i}/{len(chain)}"
        with Distiller(current, learner, config, example_inputs=ctx.example_inputs) as distiller:
            losses = fit(distiller.model, ctx.dataset, epochs=config.epochs, lr=config.learning_rate,
                         batch_size=ctx.batch_size, seed=ctx.seed, progress=ctx.progress, description=label,
                         loss_fn=distiller.loss_fn)
            learner = distiller.finalize()
        learner.eval()
        links.append({"params": count_params(learner), **ctx.quality(learner)})
        current = learner
    return current, {"student": step.factory or f"width {step.width:g}, depth {step.depth or 1:g}",
                     "teacher_params": count_params(teacher), "student_params": count_params(current),
                     "chain": links, "temperature": config.temperature, "alpha": config.alpha,
                     "epochs": config.epochs, "final_loss": losses[-1] if losses else None, **ctx.quality(current)}


def run_factorize(model: nn.Module, step: FactorizeStep, ctx: RunContext) -> tuple[nn.Module, dict]:
    """Low-rank factorization of the layers it makes smaller, then fine-tuning of the factorized model."""
    result = factorize(model, step.config)
    model, losses = result.model, []
    if step.fine_tune_epochs:
        losses = fit(model, ctx.dataset, epochs=step.fine_tune_epochs, lr=step.learning_rate,
                     batch_size=ctx.batch_size, seed=ctx.seed, progress=ctx.progress,
                     description="factorize: fine-tune", loss_fn=ctx.loss_fn())
    layers = {name: {"method": f.method, "rank": f.rank, "params_before": f.params_before,
                     "params_after": f.params_after, "energy_kept": round(f.energy_kept, 4)}
              for name, f in result.layers.items()}
    return model, {"params_before": result.params_before, "params_after": result.params_after, "layers": layers,
                   "skipped": dict(result.skipped), "fine_tune_epochs": step.fine_tune_epochs,
                   "final_loss": losses[-1] if losses else None, **ctx.quality(model)}


def run_cluster(model: nn.Module, step: ClusterStep, ctx: RunContext) -> tuple[nn.Module, dict]:
    """k-means weight sharing, then fine-tuning in which each cluster's members move together."""
    training = ClusteredTraining(model, step.config)
    losses = []
    if step.fine_tune_epochs:
        losses = fit(training.model, ctx.dataset, epochs=step.fine_tune_epochs, lr=step.learning_rate,
                     batch_size=ctx.batch_size, seed=ctx.seed, progress=ctx.progress, description="cluster: fine-tune",
                     on_step=training.step, loss_fn=ctx.loss_fn())
    clustered = training.finalize()
    return clustered, {"clusters": step.config.num_clusters, "per_channel": step.config.per_channel,
                       "fine_tune_epochs": step.fine_tune_epochs, "final_loss": losses[-1] if losses else None,
                       **ctx.quality(clustered)}


def run_step(model: nn.Module, step, ctx: RunContext) -> tuple[nn.Module, dict]:
    runner = {DistillStep: run_distill, PruneStep: run_prune, FactorizeStep: run_factorize,
              FinetuneStep: run_finetune, ClusterStep: run_cluster, QuantizeStep: run_quantize}[type(step)]
    return runner(model, step, ctx)
