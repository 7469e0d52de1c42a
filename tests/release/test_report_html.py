"""The release report people read: per-variant verdicts with reasons, the gate's CIs, ROC and
confusion matrices FP32 vs shipped, and no ``None`` / ``– / –`` / dict / JSON text anywhere, for
a failed run as for a successful one (checked on the text headless Chromium renders)."""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from edgemed.release.flow import ReleaseResult, TargetOutcome
from edgemed.release.report import write_release_report

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")
                 if shutil.which(n)), None)
FORBIDDEN = ("None", "– / –", "null", "nan", "{", "}", "[]", "':", '":', "NaN")


class _Text(HTMLParser):
    """The visible text of a page (no style, script or title)."""

    def __init__(self) -> None:
        super().__init__()
        self.skip, self.parts = 0, []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        self.skip += tag in ("style", "script", "title")

    def handle_endtag(self, tag: str) -> None:
        self.skip -= tag in ("style", "script", "title")

    def handle_data(self, data: str) -> None:
        if not self.skip:
            self.parts.append(data)


def visible_text(page: str) -> str:
    p = _Text()
    p.feed(page)
    return " ".join(" ".join(p.parts).split())


def _cfg() -> SimpleNamespace:
    return SimpleNamespace(release=SimpleNamespace(family="test-ct", version="0.1.0", counter=1),
                           model=SimpleNamespace(labels=["no_lesion", "lesion"]))


@pytest.fixture(scope="module")
def shipped(tmp_path_factory: pytest.TempPathFactory, tiny_artifact, synthetic_dir: Path, spec16):
    """A release folder with one shipped target (the tiny INT8 build) and its dataset split."""
    from edgemed.dicom import build_dataset

    out = tmp_path_factory.mktemp("rel-ok")
    build_dataset(synthetic_dir, out / "dataset", spec=spec16, fractions=(0.5, 0.25, 0.25),
                  decode=True)
    art = out / "targets" / "cpu-x86" / "artifact"
    shutil.copytree(tiny_artifact.path, art)
    sel = next(r for r in tiny_artifact.provenance if r.get("pass") == "select_variant")
    t = TargetOutcome(
        target="cpu-x86", status="released", artifact=str(art), chosen=sel["chosen"],
        why=sel["why"], gate=tiny_artifact.metrics["gate"],
        size_bytes=tiny_artifact.model_path.stat().st_size, size_ratio=0.3,
        steps={"build": "ran", "seal": "ran"}, latency="unmeasured (bench disabled)",
        device_check={"ok": True, "mode": "decrypted and ran in a runtime-only process",
                      "max_abs_diff_vs_build": 0.0}, seconds=3.2)
    return out, [t]


@pytest.fixture(scope="module")
def failed(tmp_path_factory: pytest.TempPathFactory, trained_tiny, synthetic_dir: Path, spec16):
    """A release folder whose one target failed the gate (a real failed build's report.json)
    and one that failed before building."""
    import edgemed
    from edgemed.errors import GateError
    from edgemed.evaluate import GateConfig

    out = tmp_path_factory.mktemp("rel-failed")
    art = out / "targets" / "cpu-x86" / "artifact"
    from edgemed.dicom import load_folder

    # unlabelled validation: INT8 logits never have cosine exactly 1 with FP32's, and FP32 may
    # not ship instead (require_compressed)
    impossible = GateConfig(min_cosine=1.0)
    profile = edgemed.load_target("cpu-x86").model_copy(update={"require_compressed": True})
    unlabelled = load_folder(synthetic_dir, spec16, labelled=False).x
    with pytest.raises(GateError) as e:
        edgemed.build(trained_tiny, torch.zeros(1, 1, 16, 16), calibration=synthetic_dir,
                      validation=unlabelled, target=profile, out=art, gate=impossible,
                      labels=("no_lesion", "lesion"), preprocess=spec16, progress=False)
    t1 = TargetOutcome(target="cpu-x86", status="gate-failed", steps={"build": "failed"},
                       error=e.value.to_dict(), latency=None, seconds=4.0)
    t2 = TargetOutcome(target="gpu-cuda", status="failed", step="build",
                       error={"message": "no variant of gpu-cuda can be built here",
                              "expected": "the packages its variants need",
                              "found": "tensorrt", "fix": None})
    return out, [t1, t2]


def _write(out: Path, targets: list) -> str:
    res = ReleaseResult(out=out, dataset={}, targets=targets, report=None, seconds=7.5)
    return write_release_report(res, _cfg()).read_text()


def test_successful_report_has_variants_cis_and_curves(shipped) -> None:
    out, targets = shipped
    page = _write(out, targets)
    text = visible_text(page)
    assert "chosen" in text and targets[0].chosen in text
    assert re.search(r"\[[+-]\d\.\d{3}, [+-]\d\.\d{3}\]", text)  # the gate's CIs
    assert "ROC" not in text or "does not run" not in text
    pngs = re.findall(r"src='data:image/png;base64,([^']+)'", page)
    assert len(pngs) == 1 and base64.b64decode(pngs[0])[:4] == b"\x89PNG"
    assert (out / "curves-cpu-x86.png").is_file()
    for bad in FORBIDDEN:
        assert bad not in text, (bad, text[max(0, text.find(bad) - 80):text.find(bad) + 80])


def test_failed_report_says_why_in_words(failed) -> None:
    out, targets = failed
    text = visible_text(_write(out, targets))
    assert "gate failed: nothing shipped" in text and "rejected by the gate" in text
    assert "not built" in text and "no variant of gpu-cuda can be built here" in text
    assert "no artifact was built" in text
    for bad in FORBIDDEN:
        assert bad not in text, (bad, text[max(0, text.find(bad) - 80):text.find(bad) + 80])


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed "
                    "(apt-get install -y chromium)")
@pytest.mark.parametrize("which", ["shipped", "failed"])
def test_reports_render_in_headless_chromium(which: str, request, tmp_path: Path) -> None:
    out, targets = request.getfixturevalue(which)
    _write(out, targets)
    proc = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp_path}",
         "--virtual-time-budget=10000", "--dump-dom", (out / "report.html").as_uri()],
        capture_output=True, text=True, timeout=120)
    m = re.search(r'data-images-loaded="(\d+)/(\d+)"', proc.stdout)
    assert m, proc.stderr[-2000:]
    assert m.group(1) == m.group(2) == ("1" if which == "shipped" else "0")
    text = visible_text(proc.stdout)
    assert "Release test-ct 0.1.0" in text
    for bad in FORBIDDEN:
        assert bad not in text, (bad, text[max(0, text.find(bad) - 80):text.find(bad) + 80])
