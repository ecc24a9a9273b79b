"""Measurement is pure: a model or an artifact, inputs, and a runtime (passed in as a callable) give
figures. Nothing here imports the exporters, techniques, pipeline or CLI."""

from .arena import ArenaPlan, plan_arena
from .artifact_graph import ArtifactGraph, read_graph
from .compute import count_flops, count_macs, count_params, layer_sparsity, sparsity, weight_tensors
from .energy import EnergyEstimate, artifact_energy, estimate_energy
from .environment import cpu_summary, environment
from .latency import measure_latency, torch_latency
from .litert_arena import LiteRtAllocation, litert_allocation
from .memory import peak_rss
from .quality import accuracy, fidelity, sqnr_db
from .report import ModelMetrics, check_targets, ratios
from .size import artifact_bytes, artifact_files, ota_bytes, state_dict_bytes
from .table import render_summary, summary_table

__all__ = [
    "artifact_files", "artifact_bytes", "ota_bytes", "state_dict_bytes",
    "count_params", "count_macs", "count_flops", "sparsity", "layer_sparsity", "weight_tensors",
    "measure_latency", "torch_latency", "peak_rss",
    "accuracy", "sqnr_db", "fidelity",
    "environment", "cpu_summary",
    "ModelMetrics", "ratios", "check_targets", "summary_table", "render_summary",
    "ArtifactGraph", "read_graph", "ArenaPlan", "plan_arena", "LiteRtAllocation", "litert_allocation",
    "EnergyEstimate", "estimate_energy", "artifact_energy",
]
