"""R2: report.html, one self-contained page rendered from a report (a real run's and synthetic ones)."""

import json
import re
import shutil
import subprocess

import pytest
import torch
from typer.testing import CliRunner

from edgecompress import Dataset, MeasureSettings, compress
from edgecompress.cli import app
from edgecompress.errors import DataError
from edgecompress.measure.html_report import pareto_front, render_html, report_candidates, write_html_report
from edgecompress.security.manifest import verify_manifest
from edgecompress.testing.tiny_models import TinyConv1d

HOSTILE = "<script>alert(1)</script>"
ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One compress() of a tiny conv net: magnitude pruning then INT8, ONNX, checked on the default edge_mcu."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(240, *TinyConv1d().example_inputs()[0].shape[1:], generator=g)
    y = (x.mean(dim=tuple(range(1, x.dim()))) > 0).long()
    torch.manual_seed(0)
    recipe = {"name": HOSTILE,
              "pruning": {"enabled": True, "sparsity": 0.5, "iterative": True, "iterations": 1, "fine_tune_epochs": 1},
              "quantization": {"enabled": True, "type": "int8", "calibration_samples": 64},
              "optimization": {"max_size_mb": 0.001, "min_accuracy": 0.0}, "output": {"format": "onnx"}}
    out = tmp_path_factory.mktemp("html_run")
    compress(TinyConv1d(), recipe, data=Dataset("synthetic", x[:200], y[:200], x[200:], y[200:]), out_dir=out,
             measure=MeasureSettings(warmup=2, iters=5, max_seconds=1.0, batch_size=8, peak_rss=False))
    return out


def _external_references(page: str) -> list[str]:
    return re.findall(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:|//)[^"'\s>]*""", page, flags=re.I)


def _synthetic(**extra) -> dict:
    metrics = {"size_bytes": 40_000, "ota_bytes": 36_000, "params": 10_000, "macs": 90_000, "sparsity": 0.0,
               "latency_ms": {"p50": 0.5, "p90": 0.6}, "torch_latency_ms": {"p50": 1.0, "p90": 1.2},
               "runtime": "onnxruntime", "accuracy": 0.9, "fidelity": None, "format": "onnx"}
    compressed = {**metrics, "size_bytes": 10_000, "ota_bytes": 8_000, "accuracy": 0.88,
                  "latency_ms": {"p50": 0.3, "p90": 0.4}}
    return {"edgecompress_version": "test", "recipe": {"name": "synthetic", "stages": []},
            "baseline": metrics, "compressed": compressed, **extra}


def test_a_run_writes_a_self_contained_page_with_every_section(run):
    page = (run / "report.html").read_text(encoding="utf-8")
    report = json.loads((run / "report.json").read_text())
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert _external_references(page) == []
    assert "<script" not in page.replace("&lt;script", "")  # no script at all, inline or external
    assert "<link" not in page and "@import" not in page
    assert re.findall(r"url\((?!#)", page) == []  # only the SVGs' own clip paths: url(#id)
    for section in ("summary", "tradeoffs", "sparsity", "bits", "targets", "device", "stages", "artifacts"):
        assert f'<section id="{section}">' in page
    # before/after, the two trade-offs (one figure), layer sparsity, bit-widths, the RAM plan
    assert page.count("<svg") == 5
    for artifact in report["artifacts"]:
        assert artifact["sha256"] in page
    for layer in report["stages"][1]["layer_sparsity"]:  # conv1, conv2, fc: in the sparsity chart's ticks
        assert f">{layer}<" in page
    assert "RAM plan" in page and report["device"]["arena"]["peak_op"] in page
    assert page.count('<tr class="peak">') == 1  # the peak op is highlighted in the per-op table
    assert "✗ not met" in page and "✓ met" in page  # max_size_mb 0.001 is missed, min_accuracy 0 is met


def test_the_recipe_name_is_escaped(run):
    page = (run / "report.html").read_text(encoding="utf-8")
    assert HOSTILE not in page
    assert ESCAPED in page


def test_the_manifest_covers_the_page_and_the_cli_rerenders_the_same_bytes(run):
    assert "report.html" in verify_manifest(run).files
    before = (run / "report.html").read_bytes()
    (run / "report.html").unlink()
    result = CliRunner().invoke(app, ["report", str(run)])
    assert result.exit_code == 0, result.output
    assert "report.html" in result.output
    assert (run / "report.html").read_bytes() == before  # deterministic: the signed manifest still verifies
    verify_manifest(run)


def test_the_cli_refuses_a_folder_without_a_report(tmp_path):
    result = CliRunner().invoke(app, ["report", str(tmp_path)])
    assert result.exit_code == 2 and "report.json does not exist" in result.output
    (tmp_path / "report.json").write_text("[1, 2")
    result = CliRunner().invoke(app, ["report", str(tmp_path)])
    assert result.exit_code == 2 and "not a JSON report" in result.output


def test_pareto_front_of_known_points():
    # (cost, quality): lower cost and higher quality are better
    points = [(1, 0.5), (2, 0.8), (3, 0.7), (4, 0.9), (2, 0.6), (5, 0.9), (None, 1.0), (0.5, float("nan"))]
    assert pareto_front(points) == [True, True, False, True, False, False, False, False]
    assert pareto_front([(1, 0.5), (1, 0.5)]) == [True, True]  # equal points do not dominate each other
    assert pareto_front([]) == []
    assert pareto_front([("inf", 0.9), (10, 0.9)]) == [False, True]  # report.json writes inf as a string


def test_candidates_are_plotted_and_the_front_marked():
    candidates = [{"label": f"c{i}", "size_bytes": s, "accuracy": a, "latency_ms": lat}
                  for i, (s, a, lat) in enumerate([(5000, .9, .02), (3000, .85, .03), (4000, .8, .01),
                                                   (6000, .95, .05), (7000, .9, .04), (2000, None, None)])]
    candidates.append({"label": HOSTILE, "size_bytes": 9000, "accuracy": 0.5, "latency_ms": 0.09})
    candidates.append({"label": "$x_{1", "size_bytes": 9500, "accuracy": 0.4, "latency_ms": 0.1})  # not mathtext
    page = render_html(_synthetic(), candidates)
    rows = re.findall(r"<tr><td>([^<]*)</td>(?:<td[^>]*>.*?</td>){3}<td[^>]*>(.*?)</td><td[^>]*>(.*?)</td></tr>",
                      page.split('<section id="tradeoffs">')[1].split("</section>")[0])
    marks = {label: ("yes" in size, "yes" in latency) for label, size, latency in rows}
    assert marks == {"c0": (True, True), "c1": (True, False), "c2": (False, True), "c3": (True, True),
                     "c4": (False, False), "c5": (False, False), ESCAPED: (False, False), "$x_{1": (False, False)}
    assert HOSTILE not in page and page.count("<svg") == 2  # before/after and the trade-offs
    assert "8 candidate(s)" in page and "$x_{1<" in page  # drawn as text, not parsed as mathtext


def test_the_default_candidates_are_baseline_and_compressed():
    report = _synthetic()
    assert report_candidates(report) == [
        {"label": "baseline", "size_bytes": 40_000, "accuracy": 0.9, "latency_ms": 0.5},
        {"label": "compressed", "size_bytes": 10_000, "accuracy": 0.88, "latency_ms": 0.3}]
    unlabelled = _synthetic()
    for key in ("baseline", "compressed"):
        unlabelled[key] = {**unlabelled[key], "accuracy": None, "fidelity": {"top1_agreement": 0.97}}
    assert [c["accuracy"] for c in report_candidates(unlabelled)] == [0.97, 0.97]
    assert "top-1 agreement" in render_html(unlabelled)


def test_missing_optional_parts_render(tmp_path):
    page = render_html(_synthetic())  # no device, stages, targets, artifacts, environment
    for absent in ("sparsity", "bits", "device", "stages", "artifacts"):
        assert f'<section id="{absent}">' not in page
    assert "the recipe sets no targets" in page and page.count("<svg") == 2
    not_checked = render_html(_synthetic(device={"target_device": "cloud", "profile": None, "fits": None,
                                                 "not_checked": f"{HOSTILE} has no profile"}))
    assert "not checked" in not_checked and HOSTILE not in not_checked
    bare = render_html({"baseline": None, "compressed": None})
    assert bare.count("<svg") == 0 and '<section id="summary">' in bare
    path = write_html_report(_synthetic(), tmp_path / "r.html")
    assert path.read_text(encoding="utf-8") == page


def test_bad_input_is_refused():
    with pytest.raises(DataError, match="a report is a dict"):
        render_html([1, 2])
    with pytest.raises(DataError, match="missing"):
        render_html(_synthetic(), [{"label": "a", "size_bytes": 1}])
    with pytest.raises(DataError, match="list of dicts"):
        render_html(_synthetic(), "abc")


def _browser() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.slow
def test_the_page_renders_in_headless_chromium(run, tmp_path):
    browser = _browser()
    if browser is None:
        pytest.skip("no chromium, chromium-browser or google-chrome on PATH (Debian: apt-get install chromium)")
    result = subprocess.run([browser, "--headless", "--disable-gpu", "--no-sandbox", f"--user-data-dir={tmp_path}",
                             "--dump-dom", (run / "report.html").as_uri()], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    dom = result.stdout
    # the browser parsed the page: every section and figure is in its DOM, and the hostile name stayed text
    for section in ("summary", "tradeoffs", "sparsity", "bits", "targets", "device", "stages", "artifacts"):
        assert f'id="{section}"' in dom
    assert dom.count("<svg") == 5 and "<script>alert" not in dom
    shot = tmp_path / "page.png"
    subprocess.run([browser, "--headless", "--disable-gpu", "--no-sandbox", f"--user-data-dir={tmp_path}",
                    f"--screenshot={shot}", "--window-size=1200,4000", (run / "report.html").as_uri()],
                   capture_output=True, timeout=120, check=True)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
