"""The HTML report: self-contained, every plot present; rendered by headless Chromium if there."""

from __future__ import annotations

import base64
import re
import shutil
import subprocess

import numpy as np
import pytest

from edgemed.bench.report import build_report, gate_rows, pareto_points

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")
                 if shutil.which(n)), None)


@pytest.fixture(scope="module")
def report(tiny_bench, tiny_artifact, tmp_path_factory):
    art = tmp_path_factory.mktemp("art-with-cam") / "art"
    shutil.copytree(tiny_artifact.path, art)
    (art / "gradcam").mkdir()
    from PIL import Image

    heat = (np.outer(np.linspace(0, 255, 32), np.ones(32))).astype(np.uint8)
    Image.fromarray(heat).save(art / "gradcam" / "IM0001.png")
    out = tmp_path_factory.mktemp("report")
    return build_report(out, result=tiny_bench.data, artifact=art), art


def test_html_is_self_contained_with_every_plot(report) -> None:
    files, _ = report
    html = files.html.read_text()
    assert {p.name for p in files.pngs} == {"latency.png", "processes.png", "pareto.png"}
    uris = re.findall(r'src="data:image/(png|jpeg);base64,([^"]+)"', html)
    assert len(uris) == 4  # three plots + one Grad-CAM panel
    for _, b64 in uris:
        assert base64.b64decode(b64)[:4] == b"\x89PNG"
    assert "http://" not in html and "https://" not in html and 'src="/' not in html
    for section in ("Warm latency", "Ratios", "Cold start", "Accuracy gate", "Grad-CAM",
                    "Provenance", "Machine and run"):
        assert section in html
    for p in files.pngs:
        assert p.read_bytes()[:4] == b"\x89PNG"


def test_gate_rows_read_cis_whatever_the_layout() -> None:
    metrics = {"gate": {"reference": {"accuracy": 0.9}, "candidate": {"accuracy": 0.89},
                        "agreement": {"top1_agreement": 0.99},
                        "non_inferiority": {"metric": "auc", "margin": 0.02, "difference": -0.004,
                                            "ci": [-0.01, 0.002]}},
               "clinical": {"candidate": {"overall": {"auc": 0.93}, "ci": {"auc": [0.9, 0.95]}}}}
    rows = {(r["source"], r["metric"]): r for r in gate_rows(metrics)}
    assert rows[("gate", "accuracy")]["reference"] == (0.9, None)
    assert rows[("non-inferiority (margin 0.02)", "auc difference")]["candidate"] == (-0.004, (-0.01, 0.002))
    assert rows[("clinical/candidate", "auc")]["candidate"] == (0.93, (0.9, 0.95))


def test_pareto_front() -> None:
    data = {"order": ["a", "b", "c"], "candidates": {
        "a": {"role": "fp32", "latency_ms": {"p50": 30.0}, "size_bytes": 4 << 20},
        "b": {"role": "edgemed", "latency_ms": {"p50": 10.0}, "size_bytes": 1 << 20,
              "agreement_with_baseline": {"top1_agreement": 1.0}},
        "c": {"role": "peer", "latency_ms": {"p50": 12.0}, "size_bytes": 2 << 20,
              "agreement_with_baseline": {"top1_agreement": 0.97}}}}
    front = {p["name"]: p["pareto"] for p in pareto_points(data)}
    assert front == {"a": False, "b": True, "c": False}


def test_artifact_only_report(tiny_artifact, tmp_path) -> None:
    files = build_report(tmp_path / "r", artifact=tiny_artifact.path)
    html = files.html.read_text()
    assert "Accuracy gate" in html and "Provenance" in html and files.pngs == ()


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed "
                    "(apt-get install -y chromium)")
def test_report_renders_in_headless_chromium(report, tmp_path) -> None:
    files, _ = report
    proc = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp_path}",
         "--virtual-time-budget=10000", "--dump-dom", files.html.as_uri()],
        capture_output=True, text=True, timeout=120)
    m = re.search(r'data-images-loaded="(\d+)/(\d+)"', proc.stdout)
    assert m, proc.stderr[-2000:]
    loaded, total = int(m.group(1)), int(m.group(2))
    assert total == 4 and loaded == total


def test_gradcam_panels_from_an_explain_record(tmp_path) -> None:
    from PIL import Image

    from edgemed.bench.report import gradcam_images

    (tmp_path / "cams").mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "cams" / "side.png")
    info = {"metrics": {"explain": {"png": "cams/side.png", "mean_similarity": 0.91},
                        "gradcam": ["missing.png"]}}
    found = gradcam_images(tmp_path, info)
    assert [(c, p.name) for c, p in found] == [("explain (similarity 0.910)", "side.png")]
