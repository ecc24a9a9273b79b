"""Small helpers for rewriting ONNX graphs, shared by the compaction and low-bit packing passes."""

from __future__ import annotations

import numpy as np
import onnx


def drop_unused_initializers(graph: onnx.GraphProto) -> None:
    used = {name for node in graph.node for name in node.input}
    keep = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)


def consumers(graph: onnx.GraphProto) -> dict[str, list[onnx.NodeProto]]:
    users: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            users.setdefault(name, []).append(node)
    return users


def replace_initializer(graph: onnx.GraphProto, name: str, tensor: onnx.TensorProto) -> None:
    for i, init in enumerate(graph.initializer):
        if init.name == name:
            graph.initializer[i].CopyFrom(tensor)
            return
    graph.initializer.append(tensor)


def element_count(init: onnx.TensorProto) -> int:
    return int(np.prod(init.dims)) if init.dims else 1


def only_read_as_weight(init: onnx.TensorProto, users: dict[str, list[onnx.NodeProto]],
                        readers: dict[str, int]) -> bool:
    """Whether every node reading ``init`` is one of ``readers`` (op type → the input index of its weight) and
    reads it there."""
    found = users.get(init.name, [])
    return bool(found) and all(r.op_type in readers and list(r.input).index(init.name) == readers[r.op_type]
                               for r in found)


def weight_initializers(graph: onnx.GraphProto, types, readers: dict[str, int], min_elements: int
                        ) -> list[onnx.TensorProto]:
    """Initializers of one of ``types`` with at least ``min_elements`` elements that are read only as the weight
    input of ``readers``: what the storage rewrites (sparse, codebook) may replace."""
    users = consumers(graph)
    return [i for i in graph.initializer if i.data_type in types and element_count(i) >= min_elements
            and only_read_as_weight(i, users, readers)]


def prepend_nodes(graph: onnx.GraphProto, nodes: list[onnx.NodeProto]) -> None:
    """Put ``nodes`` first; they read only initializers, so the graph stays topologically sorted."""
    if nodes:
        ordered = nodes + list(graph.node)
        del graph.node[:]
        graph.node.extend(ordered)
