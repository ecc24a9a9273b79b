"""DARTS cells and the networks around them, for 1-D signals: the continuous search network (every edge a
softmax-weighted mix of all candidate operations) and the discrete network a genotype describes.

Both share the macro-structure of DARTS: a stem conv-BN, ``cells`` cells with reduction cells (stride 2,
twice the channels) at 1/3 and 2/3 of the depth, each cell reading the outputs of the two cells before it,
then global average pooling and a Linear."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ..errors import RecipeError
from .blocks import check_count
from .genotype import Genotype, edge_count
from .ops import FactorizedReduce, ReLUConvBN, check_ops, make_op

STEM_MULTIPLIER = 3


class MixedOp(nn.Module):
    """Σ_o softmax(α)_o · o(x) over the candidate operations of one edge."""

    def __init__(self, ops: tuple[str, ...], channels: int, stride: int) -> None:
        super().__init__()
        self.ops = nn.ModuleList(make_op(op, channels, stride, affine=False) for op in ops)

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        return sum(w * op(x) for w, op in zip(weights, self.ops, strict=True))


class _Cell(nn.Module):
    """Preprocessing of the two inputs to ``channels`` (a factorized reduce when the previous cell halved the
    length, so that both inputs have the same length)."""

    def __init__(self, c_prev_prev: int, c_prev: int, channels: int, reduction: bool, reduction_prev: bool,
                 affine: bool) -> None:
        super().__init__()
        self.reduction = reduction
        self.preprocess0 = (FactorizedReduce(c_prev_prev, channels, affine) if reduction_prev
                            else ReLUConvBN(c_prev_prev, channels, 1, 1, 0, affine))
        self.preprocess1 = ReLUConvBN(c_prev, channels, 1, 1, 0, affine)


class SearchCell(_Cell):
    def __init__(self, ops: tuple[str, ...], nodes: int, c_prev_prev: int, c_prev: int, channels: int,
                 reduction: bool, reduction_prev: bool) -> None:
        super().__init__(c_prev_prev, c_prev, channels, reduction, reduction_prev, affine=False)
        self.nodes = nodes
        # node i reads states 0 … i+1; on the cell inputs (states 0 and 1) a reduction cell has stride 2
        self.edges = nn.ModuleList(MixedOp(ops, channels, 2 if reduction and j < 2 else 1)
                                   for i in range(nodes) for j in range(2 + i))

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        offset = 0
        for _ in range(self.nodes):
            states.append(sum(self.edges[offset + j](h, weights[offset + j]) for j, h in enumerate(states)))
            offset += len(states) - 1
        return torch.cat(states[2:], dim=1)


class DerivedCell(_Cell):
    def __init__(self, edges: tuple[tuple[str, int], ...], c_prev_prev: int, c_prev: int, channels: int,
                 reduction: bool, reduction_prev: bool) -> None:
        super().__init__(c_prev_prev, c_prev, channels, reduction, reduction_prev, affine=True)
        self.sources = tuple(source for _, source in edges)
        self.ops = nn.ModuleList(make_op(op, channels, 2 if reduction and source < 2 else 1, affine=True)
                                 for op, source in edges)

    def forward(self, s0: torch.Tensor, s1: torch.Tensor) -> torch.Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        for k in range(0, len(self.ops), 2):
            states.append(self.ops[k](states[self.sources[k]]) + self.ops[k + 1](states[self.sources[k + 1]]))
        return torch.cat(states[2:], dim=1)


def reduction_cells(cells: int) -> frozenset[int]:
    return frozenset((cells // 3, 2 * cells // 3))


def _macro(cells: int, channels: int, nodes: int, make_cell: Callable[..., nn.Module]
           ) -> tuple[nn.ModuleList, int]:
    """The cells in order and the channel count of the last cell's output."""
    c_prev_prev = c_prev = STEM_MULTIPLIER * channels
    current, reduction_prev, built = channels, False, []
    for i in range(cells):
        reduction = i in reduction_cells(cells)
        current = current * 2 if reduction else current
        built.append(make_cell(c_prev_prev, c_prev, current, reduction, reduction_prev))
        c_prev_prev, c_prev, reduction_prev = c_prev, nodes * current, reduction
    return nn.ModuleList(built), c_prev


class _Network(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, channels: int, cells: int, input_length: int) -> None:
        super().__init__()
        for name, value in (("in_channels", in_channels), ("num_classes", num_classes), ("channels", channels),
                            ("cells", cells), ("input_length", input_length)):
            check_count(name, value)
        self.input_shape = (in_channels, input_length)
        self.stem = nn.Sequential(nn.Conv1d(in_channels, STEM_MULTIPLIER * channels, 3, padding=1, bias=False),
                                  nn.BatchNorm1d(STEM_MULTIPLIER * channels))
        self.pool = nn.AdaptiveAvgPool1d(1)
        self.flatten = nn.Flatten()

    def example_inputs(self, batch_size: int = 1) -> tuple[torch.Tensor, ...]:
        return (torch.randn(batch_size, *self.input_shape),)


class SearchNetwork(_Network):
    """The continuous relaxation. The architecture parameters (``alphas_normal``, ``alphas_reduce``: edges ×
    operations, shared by all cells of a kind) are kept out of ``weights()``, so that two optimizers can take
    them apart; ``arch_parameters()`` returns them."""

    def __init__(self, *, in_channels: int, num_classes: int, channels: int = 8, cells: int = 3, nodes: int = 4,
                 ops: tuple[str, ...], input_length: int = 40) -> None:
        super().__init__(in_channels, num_classes, channels, cells, input_length)
        check_count("nodes", nodes)
        self.ops, self.nodes = check_ops(ops), nodes
        self.cells, c_last = _macro(cells, channels, nodes, lambda *shape: SearchCell(self.ops, nodes, *shape))
        self.classifier = nn.Linear(c_last, num_classes)
        shape = (edge_count(nodes), len(self.ops))
        self.alphas_normal = nn.Parameter(1e-3 * torch.randn(shape))
        self.alphas_reduce = nn.Parameter(1e-3 * torch.randn(shape))

    def arch_parameters(self) -> list[nn.Parameter]:
        return [self.alphas_normal, self.alphas_reduce]

    def weights(self) -> list[nn.Parameter]:
        arch = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in arch]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        normal, reduce = torch.softmax(self.alphas_normal, -1), torch.softmax(self.alphas_reduce, -1)
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1, reduce if cell.reduction else normal)
        return self.classifier(self.flatten(self.pool(s1)))


class DerivedNetwork(_Network):
    """The discrete network of a genotype, with affine batch norms, to train from scratch."""

    def __init__(self, genotype: Genotype, *, in_channels: int, num_classes: int, channels: int = 8,
                 cells: int = 3, input_length: int = 40) -> None:
        super().__init__(in_channels, num_classes, channels, cells, input_length)
        if not isinstance(genotype, Genotype):
            raise RecipeError(f"genotype must be a Genotype, got {type(genotype).__name__}")
        self.genotype = genotype
        self.cells, c_last = _macro(cells, channels, genotype.nodes, lambda c_pp, c_p, c, reduction, reduction_prev:
                                    DerivedCell(genotype.reduce if reduction else genotype.normal, c_pp, c_p, c,
                                                reduction, reduction_prev))
        self.classifier = nn.Linear(c_last, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1)
        return self.classifier(self.flatten(self.pool(s1)))
