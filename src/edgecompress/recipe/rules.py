"""The ordering rules (X2) and the anti-pattern warnings, on a sequence of (kind, parameters) stages."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

from .schema import STAGE_ORDER, PruneParams, QuantizeParams

if TYPE_CHECKING:
    from .model import Stage

ORDER_TEXT = " → ".join(STAGE_ORDER)


def order_violations(kinds: Sequence[str]) -> list[tuple[int, int]]:
    """(earlier, later) index pairs where the later stage ranks before the earlier one in STAGE_ORDER; one
    pair per out-of-place stage, naming the first stage it should have preceded."""
    rank = [STAGE_ORDER.index(k) for k in kinds]
    pairs = []
    for later in range(len(kinds)):
        earlier = next((j for j in range(later) if rank[j] > rank[later]), None)
        if earlier is not None:
            pairs.append((earlier, later))
    return pairs


def _describe_violation(kinds: Sequence[str], earlier: int, later: int) -> str:
    return (f"stages[{earlier}] {kinds[earlier]!r} comes before stages[{later}] {kinds[later]!r}, against "
            f"the order {ORDER_TEXT}")


def order_problems(kinds: Sequence[str], *, allow_unsafe_order: bool) -> list[str]:
    """Errors in the order of the stages: an unsafe order (unless allowed) and more than one quantize."""
    problems = []
    if not allow_unsafe_order:
        problems += [
            _describe_violation(kinds, e, lt) + " (each technique assumes the ones before it in this order are "
            "done, e.g. pruning a quantized model breaks its scales); reorder the stages, or set "
            "allow_unsafe_order: true to run them in this order anyway"
            for e, lt in order_violations(kinds)]
    quantize_at = [i for i, k in enumerate(kinds) if k == "quantize"]
    problems += [f"stages[{i}] 'quantize': a recipe quantizes once, and stages[{quantize_at[0]}] already does"
                 for i in quantize_at[1:]]
    return problems


LOW_BIT_TYPES = ("int4", "int3", "int2", "ternary", "binary")


def quantize_problems(i: int, cfg: QuantizeParams) -> list[str]:
    """Combinations of quantization keys that cannot work together."""
    where = f"stages[{i}] 'quantize'"
    problems = []
    if cfg.strategy == "dynamic" and cfg.type != "int8":
        problems.append(f"{where}: strategy 'dynamic' quantizes to int8 only, got type {cfg.type!r}; "
                        "use type: int8, or strategy post_training / quantization_aware")
    if cfg.type == "fp16" and cfg.strategy != "post_training":
        problems.append(f"{where}: type 'fp16' is a conversion, it takes strategy 'post_training', got "
                        f"{cfg.strategy!r}")
    if cfg.group_size is not None and cfg.type not in (*LOW_BIT_TYPES, "mixed"):
        problems.append(f"{where}: group_size applies to low-bit weights (type {', '.join(LOW_BIT_TYPES)} or "
                        f"mixed), got type {cfg.type!r}; int8 uses one scale per channel (per_channel)")
    q8 = [k for k in ("equalization", "bias_correction", "adaround") if getattr(cfg, k)]
    if q8 and (cfg.strategy != "post_training" or cfg.type in ("fp32", "fp16")):
        problems.append(f"{where}: {', '.join(q8)} refine post-training integer quantization; they do not "
                        f"apply to type {cfg.type!r} with strategy {cfg.strategy!r}")
    if cfg.type == "mixed" and cfg.strategy != "post_training":
        problems.append(f"{where}: type 'mixed' takes strategy 'post_training', got {cfg.strategy!r}")
    return problems


def prune_problems(i: int, cfg: PruneParams) -> list[str]:
    """Combinations of pruning keys that cannot work together."""
    where = f"stages[{i}] 'prune'"
    n_m = re.fullmatch(r"(\d+):(\d+)", cfg.pattern)
    problems = []
    if n_m and abs(cfg.sparsity - (1 - int(n_m[1]) / int(n_m[2]))) > 1e-9:
        problems.append(f"{where}: pattern {cfg.pattern} keeps {n_m[1]} of every {n_m[2]} weights, which is "
                        f"sparsity {1 - int(n_m[1]) / int(n_m[2]):g}; got sparsity {cfg.sparsity:g} (leave it out)")
    if cfg.pattern != "unstructured" and cfg.type not in ("magnitude", "gradient", "random"):
        problems.append(f"{where}: pattern {cfg.pattern!r} shapes weight masks of type magnitude, gradient or "
                        f"random; type {cfg.type!r} removes whole channels")
    if cfg.rewind and not (cfg.iterative and cfg.iterations >= 2 and cfg.fine_tune_epochs >= 1):
        problems.append(f"{where}: rewind (lottery ticket) needs iterative: true, iterations >= 2 and "
                        f"fine_tune_epochs >= 1 (rounds of train → prune → rewind); got iterative: "
                        f"{str(cfg.iterative).lower()}, iterations: {cfg.iterations}, fine_tune_epochs: "
                        f"{cfg.fine_tune_epochs}")
    # compared with the defaults, not with the keys given: a normalised recipe (to_dict) lists every key
    defaults = {"importance": None, "min_channels": 1, "round_to": 1, "prune_heads": True}
    given = [k for k, default in defaults.items() if getattr(cfg, k) != default]
    if given and cfg.type != "structured":
        problems.append(f"{where}: {', '.join(given)} apply to type 'structured' (whole channels); got type "
                        f"{cfg.type!r}")
    if cfg.rewind and cfg.type == "structured":
        problems.append(f"{where}: rewind (lottery ticket) rewinds masked weights; type 'structured' removes "
                        "whole channels")
    return problems


def factorize_problems(i: int, cfg) -> list[str]:
    rules = [k for k in ("rank_ratio", "energy", "param_ratio") if getattr(cfg, k) is not None]
    if len(rules) != 1:
        return [f"stages[{i}] 'factorize': give exactly one of rank_ratio, energy, param_ratio; got "
                f"{', '.join(rules) or 'none'}"]
    if cfg.method == "cp" and cfg.energy is not None:
        return [f"stages[{i}] 'factorize': method 'cp' has no singular values to keep energy of; use rank_ratio "
                "or param_ratio"]
    return []


def cluster_problems(i: int, cfg) -> list[str]:
    if cfg.bits is not None and cfg.clusters is not None:
        return [f"stages[{i}] 'cluster': give bits ({cfg.bits}) or clusters ({cfg.clusters}), not both"]
    return []


def distill_problems(i: int, cfg) -> list[str]:
    where = f"stages[{i}] 'distill'"
    given = [k for k, default in (("student_width", 0.5), ("student_depth", None)) if getattr(cfg, k) != default]
    if cfg.student is not None and given:
        return [f"{where}: student {cfg.student!r} is a user factory; {', '.join(given)} shape a student built "
                "from the teacher; give one or the other"]
    if cfg.student is not None and ":" not in cfg.student:
        return [f"{where}: student {cfg.student!r} is not 'module.path:factory'"]
    widths = list(cfg.assistant_widths) + ([cfg.student_width] if cfg.student is None else [])
    if any(a <= b for a, b in zip(widths, widths[1:], strict=False)):
        return [f"{where}: assistant_widths {list(cfg.assistant_widths)} must shrink from teacher to student "
                f"(largest first, each above the student's width {cfg.student_width:g})"]
    return []


def lint_stages(stages: Sequence[Stage], *, allow_unsafe_order: bool) -> list[str]:
    """Warnings for known anti-patterns that are not errors."""
    kinds = [s.kind for s in stages]
    warnings: list[str] = []
    if not stages:
        warnings.append("the recipe has no compression stages: the model is only exported and measured")
    if allow_unsafe_order:
        warnings += [_describe_violation(kinds, e, lt) + "; allowed because allow_unsafe_order is true"
                     for e, lt in order_violations(kinds)]
    for i, stage in enumerate(stages):
        cfg = stage.config
        if isinstance(cfg, PruneParams):
            warnings += _lint_prune(i, cfg, finetune_follows="finetune" in kinds[i + 1:])
        elif isinstance(cfg, QuantizeParams) and cfg.type == "fp32":
            warnings.append(f"stages[{i}] 'quantize': type 'fp32' does nothing; the model stays float32")
        elif isinstance(cfg, QuantizeParams) and cfg.type in ("ternary", "binary", "int2") and (
                cfg.strategy == "post_training"):
            warnings.append(f"stages[{i}] 'quantize': {cfg.type} weights without training lose most of the "
                            "accuracy; use strategy: quantization_aware")
    return warnings


def _lint_prune(i: int, cfg: PruneParams, *, finetune_follows: bool) -> list[str]:
    warnings = []
    if cfg.fine_tune_epochs == 0 and not finetune_follows:
        warnings.append(f"stages[{i}] 'prune': pruning without fine-tuning (fine_tune_epochs is 0 and no "
                        "finetune stage follows); accuracy usually drops, set fine_tune_epochs >= 1 or add "
                        "a finetune stage")
    if cfg.sparsity == 0:
        warnings.append(f"stages[{i}] 'prune': sparsity is 0, so pruning removes nothing")
    if cfg.iterations > 1 and not cfg.iterative:
        warnings.append(f"stages[{i}] 'prune': iterations is {cfg.iterations} but iterative is false, so "
                        "pruning runs in one step")
    return warnings
