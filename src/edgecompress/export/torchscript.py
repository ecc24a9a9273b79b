"""TorchScript export (traced) of float32 and float16 models, run with torch.jit.load."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import ExportError
from ..fileio import atomic_path
from .base import Artifact, Exporter, Runner, batch_of_two, for_scheme


class TorchScriptExporter(Exporter):
    name = "torchscript"
    suffix = ".pt"
    runtime = "torchscript"
    schemes = frozenset({"fp32", "fp16"})

    def export(self, model: nn.Module, example_inputs: tuple[torch.Tensor, ...], path: Path, *,
               scheme: str, metadata: dict[str, str] | None = None) -> Artifact:
        model = for_scheme(model.eval(), scheme)
        try:
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")  # torch.jit warns that it is deprecated
                traced = torch.jit.trace(model, batch_of_two(example_inputs))
                extra = {k: v.encode() for k, v in (metadata or {}).items()}
                with atomic_path(path) as tmp:
                    torch.jit.save(traced, str(tmp), _extra_files=extra)
        except Exception as e:
            raise ExportError(f"TorchScript export of {type(model).__name__} failed: {type(e).__name__}: {e}") from None
        return Artifact(self.name, Path(path), self.runtime, scheme, (Path(path),))

    def runner(self, path: Path, *, threads: int | None = None) -> Runner:
        try:
            module = torch.jit.load(str(path)).eval()
        except Exception as e:
            raise ExportError(f"torch.jit cannot load {path}: {e}") from None

        def run(x: np.ndarray) -> np.ndarray:
            previous = torch.get_num_threads()
            if threads:
                torch.set_num_threads(threads)
            try:
                with torch.no_grad():
                    return module(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))).numpy()
            finally:
                torch.set_num_threads(previous)

        return run
