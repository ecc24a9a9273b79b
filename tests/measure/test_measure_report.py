import pytest
from rich.console import Console

from edgecompress.errors import RecipeError
from edgecompress.measure import ModelMetrics, check_targets, ratios, render_summary, summary_table

LAT = {"p50": 2.0, "p90": 2.5}


def metrics(**kw) -> ModelMetrics:
    base = dict(size_bytes=4_000_000, ota_bytes=3_600_000, params=1_000_000, macs=5_000_000, sparsity=0.0,
                accuracy=0.90, latency_ms=LAT, torch_latency_ms={"p50": 8.0, "p90": 9.0}, runtime="onnxruntime",
                peak_rss_mb=60.0, format="onnx", path="baseline.onnx")
    return ModelMetrics(**{**base, **kw})


BASE = metrics()
COMP = metrics(size_bytes=1_000_000, ota_bytes=450_000, sparsity=0.5, accuracy=0.88,
               latency_ms={"p50": 1.0, "p90": 1.2}, peak_rss_mb=50.0, path="model.onnx",
               latency_detail={"b1_t1": {"p50": 1.0, "p90": 1.2}, "bN_tall": {"p50": 4.0, "p90": 5.0},
                               "batch_size_N": 32})


def test_to_dict_keys_and_round_trip():
    d = COMP.to_dict()
    assert set(d) == {"size_bytes", "ota_bytes", "params", "macs", "sparsity", "accuracy", "fidelity", "latency_ms",
                      "torch_latency_ms", "runtime", "peak_rss_mb", "format", "path", "latency_detail"}
    d["latency_ms"]["p50"] = 99.0
    assert COMP.latency_ms["p50"] == 1.0  # a copy
    assert ModelMetrics.from_dict({**COMP.to_dict(), "simulation_accuracy": 0.9}) == COMP


def test_ratios_labelled():
    r = ratios(BASE, COMP)
    assert r["size"] == 4.0 and r["ota_size"] == 8.0 and r["latency"] == 2.0 and r["params"] == 1.0
    assert r["accuracy_retention"] == pytest.approx(0.88 / 0.90)
    assert r["accuracy_drop"] == pytest.approx(0.02)
    assert r["accuracy_basis"] == "accuracy"


def test_ratios_unlabelled_use_top1_agreement():
    base = metrics(accuracy=None, fidelity={"top1_agreement": 1.0})
    comp = metrics(accuracy=None, fidelity={"top1_agreement": 0.97}, peak_rss_mb=None)
    r = ratios(base, comp)
    assert r["accuracy_retention"] == pytest.approx(0.97)
    assert r["accuracy_drop"] is None and r["peak_rss"] is None and r["accuracy_basis"] == "top1_agreement"


def test_check_targets_met_and_not_met():
    targets = check_targets(COMP, max_size_mb=0.5, max_latency_ms=1.5, min_accuracy=0.85, target_flops=1e7)
    assert targets == [
        {"name": "max_size_mb", "limit": 0.5, "value": 1.0, "met": False},
        {"name": "max_latency_ms", "limit": 1.5, "value": 1.0, "met": True},
        {"name": "min_accuracy", "limit": 0.85, "value": 0.88, "met": True},
        {"name": "target_flops", "limit": 1e7, "value": 10_000_000, "met": True},  # 2 × MACs
    ]
    assert check_targets(COMP, target_flops=1e7, flops=12_000_000)[0]["met"] is False
    assert check_targets(COMP) == []
    assert check_targets(COMP, min_accuracy=0.0)[0]["met"] is True  # a limit of 0 is allowed, and always met


def test_check_targets_unlabelled():
    unlabelled = metrics(accuracy=None, fidelity={"top1_agreement": 0.8})
    assert check_targets(unlabelled, min_accuracy=0.9) == [
        {"name": "min_top1_agreement", "limit": 0.9, "value": 0.8, "met": False}]
    assert check_targets(metrics(accuracy=None), min_accuracy=0.9)[0]["met"] is False


@pytest.mark.parametrize("kw", [{"max_size_mb": -1}, {"min_accuracy": 90}, {"max_latency_ms": "fast"}])
def test_bad_limits(kw):
    with pytest.raises(RecipeError):
        check_targets(COMP, **kw)


def _report(base: ModelMetrics, comp: ModelMetrics, **targets) -> dict:
    return {
        "edgecompress_version": "0.1.0",
        "environment": {"cpu": "Test CPU", "cpu_count": 2, "cpu_flags": ["avx2"], "torch": "2.13.0"},
        "recipe": {}, "baseline": base.to_dict(), "compressed": comp.to_dict(), "ratios": ratios(base, comp),
        "targets": check_targets(comp, **targets), "stages": [{"name": "prune", "seconds": 1.5}],
        "artifacts": [{"format": "onnx", "role": "compressed", "path": "model.onnx", "size_bytes": comp.size_bytes,
                       "sha256": "ab" * 32, "parity": {"top1_agreement": 0.995, "sqnr_db": 41.2,
                                                       "max_abs_diff": 0.003}}],
        "warnings": ["pruned without fine-tuning"],
    }


def _text(renderables) -> str:
    console = Console(record=True, width=200)
    for r in renderables:
        console.print(r)
    return console.export_text()


def test_summary_table_renders():
    text = _text([summary_table(_report(BASE, COMP, max_size_mb=0.5, min_accuracy=0.85))])
    for expected in ("artifact size (onnx)", "4 MB", "1 MB", "4×", "OTA size", "450 KB", "8×", "1M", "5M",
                     "50.0 %", "88.0 %", "-2.00 pts", "onnxruntime, batch 1, 1 thread", "2 / 2.5 ms", "2×",
                     "batch 32, all threads", "torch eager", "60 MiB", "Test CPU", "2 cores",
                     "size ≤ 0.5 MB", "✗ not met", "accuracy ≥ 85.0 %", "✓ met", "SQNR 41.2 dB", "top-1 99.5 %"):
        assert expected in text, expected


def test_summary_of_an_unlabelled_run_shows_agreement():
    base = metrics(accuracy=None, fidelity={"top1_agreement": 1.0})
    comp = metrics(accuracy=None, fidelity={"top1_agreement": 0.97}, peak_rss_mb=None)
    text = _text(render_summary(_report(base, comp, min_accuracy=0.99)))
    assert "top-1 agreement with original" in text and "97.0 %" in text and "97.0 % kept" in text
    assert "top-1 agreement ≥ 99.0 %" in text and "✗ not met" in text
    assert "warning: pruned without fine-tuning" in text and "prune" in text
