"""Sparsity schedules for gradual pruning: the target sparsity after step ``step`` of ``steps``."""

from __future__ import annotations

from ..errors import RecipeError

SCHEDULES = ("linear", "polynomial", "exponential")


def sparsity_at(step: int, steps: int, final: float, kind: str = "polynomial") -> float:
    """linear: equal increments. polynomial: Zhu & Gupta's AGP, s·(1 − (1 − t)³), prunes fast while many
    redundant weights remain and slowly near the end. exponential: keeps the same fraction of the
    surviving weights each step, 1 − (1 − s)^t."""
    if steps < 1 or not 1 <= step <= steps:
        raise RecipeError(f"schedule step {step} is outside 1..{steps}")
    t = step / steps
    if kind == "linear":
        return final * t
    if kind == "polynomial":
        return final * (1.0 - (1.0 - t) ** 3)
    if kind == "exponential":
        return 1.0 - (1.0 - final) ** t
    raise RecipeError(f"pruning schedule {kind!r} is not allowed; allowed: {', '.join(SCHEDULES)}")
