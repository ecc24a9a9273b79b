"""Where the LiteRT interpreter actually puts a .tflite model's tensors: the cross-check of the arena plan.

The interpreter is loaded without the XNNPACK delegate (which would keep the delegated tensors outside TFLite's
arena), tensors are allocated, and each non-constant tensor's buffer address is read through
``Interpreter.tensor``. ``kernels="reference"`` (the default) uses TFLite's reference kernels, which TFLite
Micro's are derived from; ``"optimized"`` the default builtin ones, whose CONV_2D adds an im2col temporary of
(output pixels × kernel size × input channels) elements. LiteRT also differs from TFLite Micro in its 64-byte
alignment, in keeping the model's inputs for the whole run, and in in-place ops (ADD may write over an input
that dies there)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import ExportError, MissingDependencyError, UnsupportedError
from .artifact_graph import tflite_graph

LITERT_ALIGNMENT = 64  # TFLite's kDefaultTensorAlignment


@dataclass(frozen=True)
class LiteRtAllocation:
    """``placements``: tensor key (as in ArtifactGraph.tensors) → (offset from the lowest buffer, bytes), for the
    model's own non-constant tensors; ``temporaries``: the same for kernel temporaries the interpreter added.
    ``arena_bytes``: the span from the lowest to the highest byte of all of them, rounded up to LiteRT's 64-byte
    alignment as its arena rounds each buffer; ``tensor_arena_bytes``: the same over the model's own tensors."""

    placements: dict[str, tuple[int, int]]
    temporaries: dict[str, tuple[int, int]]
    arena_bytes: int
    tensor_arena_bytes: int


def _span(regions) -> int:
    regions = [r for r in regions if r[1]]
    span = max((o + n for o, n in regions), default=0) - min((o for o, _ in regions), default=0)
    return -(-span // LITERT_ALIGNMENT) * LITERT_ALIGNMENT


def litert_allocation(path: str | os.PathLike[str], *, kernels: str = "reference") -> LiteRtAllocation:
    """Allocate ``path`` in the LiteRT interpreter (one thread, ``kernels`` "reference" or "optimized", no
    delegate) and read where each non-constant tensor went."""
    try:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType
    except ImportError:
        raise MissingDependencyError("the LiteRT cross-check needs ai-edge-litert: pip install edgecompress[tflite]"
                                     ) from None
    resolvers = {"reference": OpResolverType.BUILTIN_REF,
                 "optimized": OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES}
    if kernels not in resolvers:
        raise UnsupportedError(f"kernels must be one of {', '.join(map(repr, resolvers))}, got {kernels!r}")
    path = Path(path)
    graph = tflite_graph(path.read_bytes())
    try:
        interpreter = Interpreter(model_path=str(path), num_threads=1,
                                  experimental_op_resolver_type=resolvers[kernels])
        interpreter.allocate_tensors()
    except Exception as e:  # the interpreter raises RuntimeError / ValueError with its own message
        raise ExportError(f"the LiteRT interpreter cannot load {path}: {e}") from None
    addresses: dict[str, tuple[int, int]] = {}
    for detail in interpreter.get_tensor_details():
        key = str(detail["index"])
        if key in graph.constants:
            continue
        try:
            view = interpreter.tensor(detail["index"])()
        except ValueError:  # no buffer (unallocated optional tensor)
            continue
        addresses[key] = (view.ctypes.data, view.nbytes)
    base = min((a for a, n in addresses.values() if n), default=0)
    relative = {k: (a - base, n) for k, (a, n) in addresses.items()}
    own = {k: v for k, v in relative.items() if k in graph.tensors}
    temporaries = {k: v for k, v in relative.items() if k not in graph.tensors}
    return LiteRtAllocation(own, temporaries, _span(relative.values()), _span(own.values()))
