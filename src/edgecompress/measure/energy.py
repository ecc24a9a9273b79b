"""Estimated energy per inference (X3) from MAC counts by data type and from memory traffic.

Source of every figure: M. Horowitz, "1.1 Computing's energy problem (and what we can do about it)", IEEE
ISSCC 2014, pp. 10-14, doi:10.1109/ISSCC.2014.6757323, "Rough energy costs for various operations in 45 nm,
0.9 V":
    integer add:   8 bit 0.03 pJ, 32 bit 0.1 pJ       integer mult:  8 bit 0.2 pJ, 32 bit 3.1 pJ
    float add:    16 bit 0.4 pJ,  32 bit 0.9 pJ       float mult:   16 bit 1.1 pJ, 32 bit 3.7 pJ
    64-bit memory access: 8 KB cache 10 pJ, 32 KB cache 20 pJ, 1 MB cache 100 pJ, DRAM 1.3-2.6 nJ
A MAC is one multiply in the operand type plus one add in the accumulator type: int8 operands accumulate in
int32 (as TFLite and ONNX Runtime do), so int8 MAC = 0.2 + 0.1 pJ; float16 = 1.1 + 0.4; float32 = 3.7 + 0.9;
int32 = 3.1 + 0.1. Memory energy per byte = the 64-bit access energy / 8; DRAM uses the low end, 1.3 nJ.

Traffic model: each op reads its input activations and its weights once and writes its outputs once (perfect
on-chip reuse inside an op), so memory energy is a lower bound. 45 nm figures overstate absolute energy on
newer processes; the estimate is for comparing models and compression choices on one device, not a
measurement.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from ..errors import DataError, UnsupportedError
from .artifact_graph import ArtifactGraph, read_graph

SOURCE = "Horowitz, ISSCC 2014, 45 nm 0.9 V (doi:10.1109/ISSCC.2014.6757323)"

# pJ per operation (Horowitz 2014).
OPERATION_PJ: MappingProxyType[str, float] = MappingProxyType({
    "int8_add": 0.03, "int32_add": 0.1, "int8_mult": 0.2, "int32_mult": 3.1,
    "fp16_add": 0.4, "fp32_add": 0.9, "fp16_mult": 1.1, "fp32_mult": 3.7,
})
# pJ per 64-bit access (Horowitz 2014; DRAM: the low end of 1.3-2.6 nJ).
ACCESS_64BIT_PJ: MappingProxyType[str, float] = MappingProxyType({
    "sram_8kb": 10.0, "sram_32kb": 20.0, "sram_1mb": 100.0, "dram": 1300.0,
})
MEMORY_PJ_PER_BYTE: MappingProxyType[str, float] = MappingProxyType({k: v / 8 for k, v in ACCESS_64BIT_PJ.items()})

# pJ per MAC by the type of the operands: a multiply plus an add into the accumulator.
_O = OPERATION_PJ
MAC_PJ: MappingProxyType[str, float] = MappingProxyType({
    "int8": _O["int8_mult"] + _O["int32_add"],
    "uint8": _O["int8_mult"] + _O["int32_add"],
    "int32": _O["int32_mult"] + _O["int32_add"],
    "float16": _O["fp16_mult"] + _O["fp16_add"],
    "float32": _O["fp32_mult"] + _O["fp32_add"],
})


@dataclass(frozen=True)
class EnergyEstimate:
    """Energy of one inference in picojoules, split into compute and memory traffic."""

    compute_pj: float
    weight_memory_pj: float
    activation_memory_pj: float
    macs_by_dtype: Mapping[str, int]
    weight_bytes_read: int
    activation_bytes_moved: int
    weight_memory: str
    activation_memory: str
    source: str = field(default=SOURCE)

    @property
    def total_pj(self) -> float:
        return self.compute_pj + self.weight_memory_pj + self.activation_memory_pj

    def to_dict(self) -> dict:
        return {"total_uj": self.total_pj / 1e6, "compute_uj": self.compute_pj / 1e6,
                "weight_memory_uj": self.weight_memory_pj / 1e6,
                "activation_memory_uj": self.activation_memory_pj / 1e6,
                "macs_by_dtype": dict(self.macs_by_dtype), "weight_bytes_read": self.weight_bytes_read,
                "activation_bytes_moved": self.activation_bytes_moved, "weight_memory": self.weight_memory,
                "activation_memory": self.activation_memory, "source": self.source}


def _check_count(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise DataError(f"{name} must be an integer ≥ 0, got {value!r}")
    return value


def _memory(name: str, level: str) -> float:
    if level not in MEMORY_PJ_PER_BYTE:
        raise UnsupportedError(f"{name} {level!r} is not in the energy table; allowed: "
                               f"{', '.join(map(repr, MEMORY_PJ_PER_BYTE))}")
    return MEMORY_PJ_PER_BYTE[level]


def estimate_energy(macs_by_dtype: Mapping[str, int], *, weight_bytes: int = 0, activation_bytes: int = 0,
                    weight_memory: str = "dram", activation_memory: str = "sram_1mb") -> EnergyEstimate:
    """Energy of ``macs_by_dtype`` MACs (operand type → count) plus reading ``weight_bytes`` from
    ``weight_memory`` and moving ``activation_bytes`` through ``activation_memory`` (levels of
    ``MEMORY_PJ_PER_BYTE``)."""
    unknown = sorted(set(macs_by_dtype) - set(MAC_PJ))
    if unknown:
        raise UnsupportedError(f"no energy figure for MACs in {', '.join(unknown)}; the table (Horowitz 2014) "
                               f"covers {', '.join(MAC_PJ)}")
    counts = {dtype: _check_count(f"macs_by_dtype[{dtype!r}]", n) for dtype, n in macs_by_dtype.items()}
    weight_bytes = _check_count("weight_bytes", weight_bytes)
    activation_bytes = _check_count("activation_bytes", activation_bytes)
    compute = sum(MAC_PJ[dtype] * n for dtype, n in counts.items())
    return EnergyEstimate(compute, weight_bytes * _memory("weight_memory", weight_memory),
                          activation_bytes * _memory("activation_memory", activation_memory),
                          MappingProxyType(counts), weight_bytes, activation_bytes, weight_memory,
                          activation_memory)


def artifact_energy(graph: ArtifactGraph | str | os.PathLike[str], *, weight_memory: str = "dram",
                    activation_memory: str = "sram_1mb") -> EnergyEstimate:
    """The energy estimate of one inference of an artifact (``.onnx`` / ``.tflite``) at batch 1: each op's MACs
    in its compute type, the weights it reads, and the activations it reads and writes."""
    if not isinstance(graph, ArtifactGraph):
        graph = read_graph(graph)
    macs: dict[str, int] = {}
    weight_bytes = activation_bytes = 0
    for op in graph.ops:
        if op.macs:
            macs[op.compute_dtype] = macs.get(op.compute_dtype, 0) + op.macs
        weight_bytes += sum(graph.constants[w].nbytes for w in op.weights)
        activation_bytes += sum(graph.tensors[t].nbytes for t in (*op.inputs, *op.outputs))
    return estimate_energy(macs, weight_bytes=weight_bytes, activation_bytes=activation_bytes,
                           weight_memory=weight_memory, activation_memory=activation_memory)
