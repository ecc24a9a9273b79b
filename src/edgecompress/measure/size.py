"""What an artifact costs on disk and over the air: every file it needs, summed, and gzip-compressed."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import torch
from safetensors.torch import save as safetensors_save
from torch import nn

from ..errors import ExportError, RecipeError, UnsupportedError

_CHUNK = 1 << 20


def _onnx_tensors(graph):
    """Every TensorProto that may carry external data: initializers, sparse initializers, and tensor
    attributes of nodes, including those inside subgraphs (If / Loop / Scan bodies)."""
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            if attr.HasField("g"):
                yield from _onnx_tensors(attr.g)
            for sub in attr.graphs:
                yield from _onnx_tensors(sub)


def _onnx_external_files(path: Path) -> list[Path]:
    import onnx

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # protobuf raises several types for a damaged file
        raise ExportError(f"cannot parse ONNX file {path}: {type(e).__name__}: {e}") from None
    locations = {
        entry.value
        for tensor in _onnx_tensors(proto.graph)
        if tensor.data_location == onnx.TensorProto.EXTERNAL
        for entry in tensor.external_data
        if entry.key == "location"
    }
    files = [path.parent / location for location in sorted(locations)]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise ExportError(f"{path} refers to external data that does not exist: {', '.join(missing)}")
    # The exporter's convention; an unreferenced one beside the model still ships with it.
    for sibling in (path.with_name(path.name + ".data"), path.with_suffix(".data")):
        if sibling.is_file() and sibling not in files:
            files.append(sibling)
    return files


def artifact_files(path: str | os.PathLike[str]) -> list[Path]:
    """The files an artifact consists of: the file itself followed by its ONNX external-data files, or
    every file under a directory (recursively), sorted."""
    p = Path(path)
    if p.is_dir():
        return sorted(f for f in p.rglob("*") if f.is_file())
    if not p.is_file():
        raise ExportError(f"artifact not found: {p}")
    if p.suffix.lower() == ".onnx":
        return [p, *_onnx_external_files(p)]
    return [p]


def artifact_bytes(path: str | os.PathLike[str]) -> int:
    """Bytes on disk of the artifact and every file it needs."""
    return sum(f.stat().st_size for f in artifact_files(path))


class _CountingSink:
    """A write-only file object that keeps the count, not the bytes."""

    def __init__(self) -> None:
        self.count = 0

    def write(self, data: bytes) -> int:
        self.count += len(data)
        return len(data)

    def flush(self) -> None:
        """Nothing is buffered here; GzipFile calls this on close."""


def ota_bytes(path: str | os.PathLike[str], level: int = 9) -> int:
    """Bytes of a gzip (``level`` 0–9, mtime 0 so the figure is reproducible) of the artifact's files
    concatenated: what an over-the-air update transfers. Zeros from pruning show up here, not on disk."""
    if not isinstance(level, int) or not 0 <= level <= 9:
        raise RecipeError(f"gzip level must be an integer from 0 to 9, got {level!r}")
    sink = _CountingSink()
    with gzip.GzipFile(filename="", mode="wb", compresslevel=level, fileobj=sink, mtime=0) as gz:
        for f in artifact_files(path):
            with open(f, "rb") as src:
                while chunk := src.read(_CHUNK):
                    gz.write(chunk)
    return sink.count


def state_dict_bytes(model: nn.Module) -> int:
    """Bytes of the model's state dict serialised as safetensors. Tied tensors are stored once; other
    views of a shared storage are copied, as safetensors requires."""
    tensors: dict[str, torch.Tensor] = {}
    seen: set[tuple] = set()
    storages: set[int] = set()
    for name, value in model.state_dict().items():
        if not isinstance(value, torch.Tensor):
            raise UnsupportedError(f"state dict entry {name!r} is a {type(value).__name__}, not a tensor; "
                                   "measure the exported artifact instead")
        t = value.detach()
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), tuple(t.stride()), t.dtype)
        if key in seen:
            continue
        seen.add(key)
        ptr = t.untyped_storage().data_ptr()
        t = t.clone(memory_format=torch.contiguous_format) if ptr in storages else t.contiguous()
        storages.add(ptr)
        tensors[name] = t
    try:
        return len(safetensors_save(tensors))
    except Exception as e:  # safetensors raises its own error types for unsupported dtypes
        raise UnsupportedError(f"safetensors cannot serialise this state dict: {type(e).__name__}: {e}") from None
