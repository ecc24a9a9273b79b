"""Pruning: importance criteria, unstructured masks, schedules."""

from .config import PruneConfig
from .schedule import SCHEDULES, sparsity_at
from .unstructured import MaskedPruning, masks_for, prune

__all__ = ["PruneConfig", "MaskedPruning", "masks_for", "prune", "sparsity_at", "SCHEDULES"]
