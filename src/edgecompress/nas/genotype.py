"""A discrete DARTS architecture (the genotype) and its derivation from the architecture weights α."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import RecipeError

Edge = tuple[str, int]  # (operation, index of the input state: 0, 1 the two previous cells, 2… earlier nodes)


@dataclass(frozen=True)
class Genotype:
    """Two edges per node for the normal and the reduction cell; a cell's output concatenates all its nodes."""

    normal: tuple[Edge, ...]
    reduce: tuple[Edge, ...]

    def __post_init__(self) -> None:
        for kind in ("normal", "reduce"):
            edges = getattr(self, kind)
            if not edges or len(edges) % 2:
                raise RecipeError(f"the {kind} cell needs two edges per node, got {len(edges)} edges")
            for k, (op, source) in enumerate(edges):
                node = k // 2
                if op == "none" or not 0 <= source < node + 2:
                    raise RecipeError(f"{kind} edge {k} ({op!r}, {source}) is not allowed: node {node} takes "
                                      f"inputs 0…{node + 1} through an operation other than 'none'")

    @property
    def nodes(self) -> int:
        return len(self.normal) // 2

    def to_dict(self) -> dict[str, list[list]]:
        return {"normal": [list(edge) for edge in self.normal], "reduce": [list(edge) for edge in self.reduce]}


def edge_count(nodes: int) -> int:
    """Edges of a search cell: node i reads the two cell inputs and the i earlier nodes."""
    return sum(2 + i for i in range(nodes))


def parse_alphas(alphas: torch.Tensor, ops: tuple[str, ...], nodes: int, *, keep: int = 2) -> tuple[Edge, ...]:
    """DARTS's derivation for one cell: on each edge the strongest operation other than 'none' (by softmax
    weight), and for each node the ``keep`` edges whose strongest operation weighs most (ties: the earlier)."""
    if alphas.shape != (edge_count(nodes), len(ops)):
        raise RecipeError(f"alphas of shape {tuple(alphas.shape)} do not fit {nodes} nodes and {len(ops)} ops; "
                          f"expected {(edge_count(nodes), len(ops))}")
    weights = torch.softmax(alphas.detach().float(), dim=-1)
    allowed = torch.tensor([op != "none" for op in ops])
    masked = weights.masked_fill(~allowed, -1.0)
    edges: list[Edge] = []
    start = 0
    for node in range(nodes):
        rows = masked[start:start + node + 2]
        strength, best = rows.max(dim=-1)
        order = sorted(range(node + 2), key=lambda j: (-strength[j].item(), j))[:keep]
        edges.extend((ops[int(best[j])], j) for j in sorted(order))
        start += node + 2
    return tuple(edges)
