"""FP16 conversion (Q3)."""

from __future__ import annotations

import copy

import torch
from torch import nn


class HalfPrecision(nn.Module):
    """FP16 conversion (Q3): float16 weights and compute inside, float32 at the boundary so that callers
    and parity checks feed and read float32 as for every other artifact."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = copy.deepcopy(model).half().eval()

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        # Float inputs become float16; integer inputs (token ids, masks) pass unchanged.
        return self.model(*(x.half() if x.is_floating_point() else x for x in inputs)).float()
