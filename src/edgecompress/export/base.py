"""The exporter interface: every format exports, checks, and runs its artifact the same way."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..quantization.fp16 import HalfPrecision

# A loaded artifact in its runtime: numpy input batch → numpy output batch.
Runner = Callable[[np.ndarray], np.ndarray]


def batch_of_two(example_inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """Example inputs with batch size 2: torch.export specialises a batch of 1 to a constant, and the
    artifact must accept any batch size (batch 1 for latency, large batches for evaluation)."""
    return tuple(torch.cat([t[:1], t[:1]]) for t in example_inputs)


def for_scheme(model: nn.Module, scheme: str) -> nn.Module:
    """The module to export for ``scheme``: the FP16 wrapper for fp16, else the model itself."""
    if scheme == "fp16" and not isinstance(model, HalfPrecision):
        return HalfPrecision(model)
    return model


@dataclass(frozen=True)
class Artifact:
    format: str
    path: Path
    runtime: str
    scheme: str  # the quantization scheme it carries: fp32, int8, …
    files: tuple[Path, ...] = field(default_factory=tuple)


class Exporter(ABC):
    """One format. Heavy imports stay inside the methods so that importing edgecompress stays cheap."""

    name: str
    suffix: str
    runtime: str
    schemes: frozenset[str]

    def supports(self, scheme: str) -> bool:
        return scheme in self.schemes

    def saturates_int8_weights(self) -> bool:
        """True when this runtime, on this machine, cannot multiply full-range int8 weights exactly, so
        quantization should keep weights in 7 bits (``QuantConfig.reduce_range``)."""
        return False

    @abstractmethod
    def export(self, model: nn.Module, example_inputs: tuple[torch.Tensor, ...], path: Path, *,
               scheme: str, metadata: dict[str, str] | None = None) -> Artifact:
        """Write the artifact atomically to ``path`` and check its structure."""

    @abstractmethod
    def runner(self, path: Path, *, threads: int | None = None) -> Runner:
        """Load the artifact in its runtime."""
