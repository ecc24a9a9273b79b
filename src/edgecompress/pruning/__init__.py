"""Pruning: importance criteria, unstructured and N:M / block masks, schedules, lottery tickets."""

from .config import PruneConfig
from .lottery import find_ticket
from .schedule import SCHEDULES, sparsity_at
from .structured import StructuredResult, apply_plan, mask_structured, plan_structured, prune_structured
from .structured_config import StructuredPruneConfig
from .unstructured import MaskedPruning, masks_for, prune

__all__ = ["PruneConfig", "MaskedPruning", "masks_for", "prune", "sparsity_at", "SCHEDULES", "find_ticket",
           "StructuredPruneConfig", "StructuredResult", "prune_structured", "plan_structured", "apply_plan",
           "mask_structured"]
