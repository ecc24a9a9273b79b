"""The report types: one model's figures, the ratios between two models, and the budget checks.
The summary table that renders a whole report lives in ``table.py`` and is re-exported here."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from numbers import Real

from ..errors import DataError, RecipeError
from .table import render_summary, summary_table

__all__ = ["ModelMetrics", "ratios", "check_targets", "summary_table", "render_summary"]

BYTES_PER_MB = 1_000_000  # targets and tables use decimal megabytes, as storage and OTA budgets do


@dataclass(frozen=True, kw_only=True)
class ModelMetrics:
    """The figures of one model as shipped.

    size_bytes: the artifact and its external data on disk. ota_bytes: the same, gzip-compressed.
    params, macs: of the float model, MACs for one forward pass on the example inputs (batch 1).
    sparsity: fraction of zero weights. accuracy: on labelled test data, else None; fidelity: top1_agreement,
    sqnr_db, cosine, max_abs_diff against the original model's outputs (None if not measured).
    latency_ms: p50/p90 in the artifact's ``runtime`` at batch 1 with one thread; torch_latency_ms: the
    same in eager PyTorch. peak_rss_mb: peak RAM of a fresh process running the artifact (MiB).
    latency_detail: "b1_t1", "b1_tall", "bN_t1", "bN_tall" → latency dicts (batch 1 / N, one / all threads).
    """

    size_bytes: int
    ota_bytes: int
    params: int
    macs: int
    sparsity: float
    latency_ms: dict
    torch_latency_ms: dict
    runtime: str
    accuracy: float | None = None
    fidelity: dict | None = None
    peak_rss_mb: float | None = None
    format: str | None = None
    path: str | None = None
    latency_detail: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("size_bytes", "ota_bytes", "params", "macs"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise DataError(f"ModelMetrics.{name} must be an integer ≥ 0, got {value!r}")
        if not 0.0 <= self.sparsity <= 1.0:
            raise DataError(f"ModelMetrics.sparsity must be in [0, 1], got {self.sparsity!r}")
        if self.accuracy is not None and not 0.0 <= self.accuracy <= 1.0:
            raise DataError(f"ModelMetrics.accuracy must be in [0, 1] or None, got {self.accuracy!r}")
        for name in ("latency_ms", "torch_latency_ms"):
            missing = {"p50", "p90"} - set(getattr(self, name))
            if missing:
                raise DataError(f"ModelMetrics.{name} needs keys p50 and p90, missing {sorted(missing)}")

    def to_dict(self) -> dict:
        """A JSON-ready copy; nested dicts are copied so that editing it leaves the metrics unchanged."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ModelMetrics:
        """The inverse of ``to_dict``; keys that are not fields (e.g. added by the pipeline) are ignored."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator is None or denominator == 0:
        return None
    return numerator / denominator


def _top1_agreement(metrics: ModelMetrics) -> float | None:
    return None if metrics.fidelity is None else metrics.fidelity.get("top1_agreement")


def ratios(baseline: ModelMetrics, compressed: ModelMetrics) -> dict:
    """baseline ÷ compressed for size, ota_size, params, macs and peak_rss (>1: smaller); latency and
    torch_latency = baseline p50 ÷ compressed p50 (the speed-up, >1: faster); accuracy_retention =
    compressed ÷ baseline accuracy and accuracy_drop = baseline − compressed (fraction, 0.01 = one
    point). Without labels, retention uses the compressed model's top-1 agreement with the original
    (the original agrees with itself) and the drop is None. accuracy_basis says which was used.
    Each entry is None where it cannot be computed."""
    result = {
        "size": _ratio(baseline.size_bytes, compressed.size_bytes),
        "ota_size": _ratio(baseline.ota_bytes, compressed.ota_bytes),
        "params": _ratio(baseline.params, compressed.params),
        "macs": _ratio(baseline.macs, compressed.macs),
        "latency": _ratio(baseline.latency_ms["p50"], compressed.latency_ms["p50"]),
        "torch_latency": _ratio(baseline.torch_latency_ms["p50"], compressed.torch_latency_ms["p50"]),
        "peak_rss": _ratio(baseline.peak_rss_mb, compressed.peak_rss_mb),
    }
    if baseline.accuracy is not None and compressed.accuracy is not None:
        result.update(accuracy_retention=_ratio(compressed.accuracy, baseline.accuracy),
                      accuracy_drop=baseline.accuracy - compressed.accuracy, accuracy_basis="accuracy")
    elif _top1_agreement(compressed) is not None:
        reference = _top1_agreement(baseline)
        result.update(accuracy_retention=_ratio(_top1_agreement(compressed), 1.0 if reference is None else reference),
                      accuracy_drop=None, accuracy_basis="top1_agreement")
    else:
        result.update(accuracy_retention=None, accuracy_drop=None, accuracy_basis=None)
    return result


def _limit(name: str, value: float | None, *, fraction: bool = False) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, Real) or math.isnan(value) or value < 0:
        raise RecipeError(f"{name} must be a number ≥ 0, got {value!r}")
    if fraction and value > 1:
        raise RecipeError(f"{name} is a fraction in [0, 1], got {value!r}")
    return value


def check_targets(metrics: ModelMetrics, *, max_size_mb: float | None = None, max_latency_ms: float | None = None,
                  min_accuracy: float | None = None, target_flops: float | None = None,
                  flops: int | None = None) -> list[dict]:
    """One {"name", "limit", "value", "met"} per limit given, in this order:

    - max_size_mb: the artifact on disk (with external data) in MB of 1,000,000 bytes, value ≤ limit.
    - max_latency_ms: runtime p50 at batch 1, one thread, in milliseconds, value ≤ limit.
    - min_accuracy (a fraction, 0.9 = 90 %): accuracy ≥ limit. Without labels the check is named
      min_top1_agreement and uses the top-1 agreement with the original model. With neither, value is
      None and the target is not met.
    - target_flops: ``flops`` (default 2 × metrics.macs, see ``count_flops``) ≤ limit.
    """
    targets = []
    if _limit("max_size_mb", max_size_mb) is not None:
        value = metrics.size_bytes / BYTES_PER_MB
        targets.append({"name": "max_size_mb", "limit": max_size_mb, "value": value, "met": value <= max_size_mb})
    if _limit("max_latency_ms", max_latency_ms) is not None:
        value = metrics.latency_ms["p50"]
        targets.append({"name": "max_latency_ms", "limit": max_latency_ms, "value": value,
                        "met": value <= max_latency_ms})
    if _limit("min_accuracy", min_accuracy, fraction=True) is not None:
        name, value = "min_accuracy", metrics.accuracy
        if value is None and _top1_agreement(metrics) is not None:
            name, value = "min_top1_agreement", _top1_agreement(metrics)
        targets.append({"name": name, "limit": min_accuracy, "value": value,
                        "met": value is not None and value >= min_accuracy})
    if _limit("target_flops", target_flops) is not None:
        value = 2 * metrics.macs if flops is None else flops
        targets.append({"name": "target_flops", "limit": target_flops, "value": value, "met": value <= target_flops})
    return targets
