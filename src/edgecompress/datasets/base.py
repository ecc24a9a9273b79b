"""The in-memory data set every stage works on: edge-scale data fits in RAM, so we keep tensors."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

from ..errors import DataError

Batch = tuple[torch.Tensor, torch.Tensor | None]


@dataclass(frozen=True)
class Dataset:
    """Train and test splits as tensors. Labels are optional: without them, evaluation reports fidelity
    to the original model instead of accuracy."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor | None
    x_test: torch.Tensor
    y_test: torch.Tensor | None
    num_classes: int | None = None

    def __post_init__(self) -> None:
        for split, x, y in (("train", self.x_train, self.y_train), ("test", self.x_test, self.y_test)):
            if not isinstance(x, torch.Tensor) or x.dtype != torch.float32:
                raise DataError(f"{self.name}: x_{split} must be a float32 tensor, got {type(x).__name__}"
                                f"{'' if not isinstance(x, torch.Tensor) else ' of ' + str(x.dtype)}")
            if x.shape[0] == 0:
                raise DataError(f"{self.name}: x_{split} is empty")
            if not torch.isfinite(x).all():
                raise DataError(f"{self.name}: x_{split} contains NaN or Inf values")
            if y is not None:
                if y.dtype != torch.int64 or y.dim() != 1:
                    raise DataError(f"{self.name}: y_{split} must be a 1-D int64 tensor of class indices, "
                                    f"got {tuple(y.shape)} {y.dtype}")
                if y.shape[0] != x.shape[0]:
                    raise DataError(f"{self.name}: x_{split} has {x.shape[0]} samples but y_{split} has "
                                    f"{y.shape[0]}")
        if self.x_train.shape[1:] != self.x_test.shape[1:]:
            raise DataError(f"{self.name}: train samples have shape {tuple(self.x_train.shape[1:])} but test "
                            f"samples have {tuple(self.x_test.shape[1:])}")
        if (self.y_train is None) != (self.y_test is None):
            raise DataError(f"{self.name}: give labels for both splits or for neither")

    @property
    def labelled(self) -> bool:
        return self.y_train is not None

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    def split(self, which: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        if which == "train":
            return self.x_train, self.y_train
        if which == "test":
            return self.x_test, self.y_test
        raise DataError(f"unknown split {which!r}; allowed: 'train', 'test'")

    def batches(self, which: str = "train", *, batch_size: int = 128, shuffle: bool = False,
                seed: int = 0) -> Iterator[Batch]:
        """Mini-batches of (inputs, labels-or-None); shuffling is seeded so runs repeat."""
        x, y = self.split(which)
        order = (torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))
                 if shuffle else torch.arange(x.shape[0]))
        for start in range(0, x.shape[0], batch_size):
            idx = order[start:start + batch_size]
            yield x[idx], (None if y is None else y[idx])

    def num_batches(self, which: str = "train", batch_size: int = 128) -> int:
        return -(-self.split(which)[0].shape[0] // batch_size)

    def calibration_inputs(self, n: int, *, seed: int = 0) -> torch.Tensor:
        """``n`` training inputs drawn without replacement (seeded): representative, not the first n."""
        return self.x_train[self._calibration_indices(n, seed)]

    def calibration_labels(self, n: int, *, seed: int = 0) -> torch.Tensor | None:
        """The labels of ``calibration_inputs(n, seed=seed)`` (None without labels)."""
        return None if self.y_train is None else self.y_train[self._calibration_indices(n, seed)]

    def _calibration_indices(self, n: int, seed: int) -> torch.Tensor:
        if n <= 0:
            raise DataError(f"calibration needs a positive number of samples, got {n}")
        perm = torch.randperm(self.x_train.shape[0], generator=torch.Generator().manual_seed(seed))
        return perm[:n]
