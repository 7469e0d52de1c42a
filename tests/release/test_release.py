"""edgemed release: per-target bundles that verify and run as a device, resumable, honest."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from edgemed.cli import app
from edgemed.errors import InvalidInputError
from edgemed.release import load_release_config, release

PROJECT = """
[model]
source = "tests.helpers.tiny_models:make_net"
weights = "tiny.pt"
input = [1, 1, 16, 16]
labels = ["no_lesion", "lesion"]

[data]
dicom = "{dicom}"
split = [0.5, 0.25, 0.25]

[preprocess]
window = [40, 400]

[release]
family = "test-ct"
version = "0.1.0"
counter = 1
targets = ["cpu-x86"]
out = "rel"
device_check = "host"   # the isolated device venv comes from pip: tests/release/test_device_env.py

[gate]
max_accuracy_drop = 0.05
max_auc_drop = 0.05

[signing]
publisher_key = "keys/publisher.key"
publisher_pub = "keys/publisher.pub"
devices = ["keys/dev1.pub"]
verify_device_key = "keys/dev1.key"

[bench]
enabled = false
"""


@pytest.fixture()
def project(tmp_path: Path, synthetic_dir: Path, trained_tiny) -> Path:  # type: ignore[no-untyped-def]
    from edgemed.bundle import generate_keypair

    generate_keypair(tmp_path / "keys", kind="publisher", name="publisher")
    generate_keypair(tmp_path / "keys", kind="device", name="dev1")
    torch.save(trained_tiny.state_dict(), tmp_path / "tiny.pt")
    p = tmp_path / "edgemed.toml"
    p.write_text(PROJECT.format(dicom=synthetic_dir))
    return p


def test_release_then_rerun_skips_everything(project: Path) -> None:
    r = release(project)
    assert r.ok and r.exit_code == 0, [t.error for t in r.targets]
    t = r.targets[0]
    # the tiny INT8 net may be slower than FP32 on this CPU: then FP32 ships (fallback-fp32)
    assert t.status in ("released", "fallback-fp32") and t.steps["build"] == "ran"
    assert t.steps["seal"] == "ran"
    dc = t.device_check
    assert dc["ok"] and dc["leaked_modules"] == [] and dc["max_abs_diff_vs_build"] <= 1e-4
    assert "runtime-only" in dc["mode"]
    assert t.latency.startswith("unmeasured")
    bundle = Path(t.bundle)
    assert (bundle / "bundle.json").is_file() and (bundle / "model.sig").is_file()
    manifest = json.loads((bundle / "bundle.json").read_text())
    assert manifest["family"] == "test-ct-cpu-x86" and manifest["release"] == 1
    assert r.report is not None and "test-ct" in r.report.read_text()
    assert r.dataset["leak_check"]["ok"] is True
    again = release(project)
    assert again.ok and all(v.startswith("skipped") for k, v in again.targets[0].steps.items()
                            if k not in ("register", "bench"))
    assert again.skipped_steps >= 4



def test_release_is_reproducible(project: Path) -> None:
    """Same inputs and seeds: manifests differ only in ids, times, encryption and timings."""
    from edgemed.targets import BUILTIN_DIR

    # one candidate, so the choice cannot flip on timing noise between two tiny models: a host
    # rule this machine does not match (only the default is built, and nothing is timed)
    prof = (BUILTIN_DIR / "cpu-x86.toml").read_text().replace('name = "cpu-x86"', 'name = "cpu-x86-one"')
    head, _, _ = prof.partition("[[variants]]")
    head = head.replace('arch = ["x86_64", "AMD64"]', 'arch = ["riscv64"]')
    one = head.replace('default_variant = "ort-int8-rr"', 'default_variant = "ort-int8-u8s8"') + \
        '[[variants]]\nname = "ort-int8-u8s8"\nbackend = "onnxruntime"\npasses = [\n' \
        '  { pass = "export_onnx", opset = 17 },\n  { pass = "quantize_onnxruntime", ' \
        'activation_type = "uint8", weight_type = "int8" },\n]\n'
    (project.parent / "one.toml").write_text(one)
    project.write_text(project.read_text().replace('targets = ["cpu-x86"]',
                                                   f'targets = ["{project.parent / "one.toml"}"]'))
    first = release(project)
    assert first.ok, [t.error for t in first.targets]
    m1 = json.loads((Path(first.targets[0].bundle) / "bundle.json").read_text())
    assert m1["family"] == "test-ct-cpu-x86-one"
    # a registered release is never re-sealed under the same counter: the re-run takes the next
    project.write_text(project.read_text().replace("counter = 1", "counter = 2"))
    second = release(project, force=True)
    assert second.ok, [t.error for t in second.targets]
    m2 = json.loads((Path(second.targets[0].bundle) / "bundle.json").read_text())

    def stable(m: dict) -> dict:
        m = {k: v for k, v in m.items()
             if k not in {"bundle_id", "created", "expires", "encryption", "payloads", "release"}}
        m["provenance"] = [{k: v for k, v in r.items() if k not in ("seconds", "timings_ms", "why")}
                           for r in m["provenance"]]
        return m

    assert stable(m1) == stable(m2)


def _fragile(project: Path, require_compressed: bool) -> None:
    text = project.read_text().replace("max_accuracy_drop = 0.05", "max_accuracy_drop = 0.0")
    text = text.replace("max_auc_drop = 0.05", "max_auc_drop = 0.0")
    text = text.replace('source = "tests.helpers.tiny_models:make_net"\nweights = "tiny.pt"',
                        'source = "tests.helpers.tiny_models:Fragile"')
    if require_compressed:
        text = text.replace('out = "rel"', 'out = "rel"\nrequire_compressed = true')
    project.write_text(text)


def test_no_compressed_candidate_ships_fp32_and_says_so(project: Path) -> None:
    _fragile(project, require_compressed=False)
    r = release(project)
    t = r.targets[0]
    assert t.status == "fallback-fp32" and r.exit_code == 0 and t.bundle is not None
    assert t.chosen == "ort-fp32" and "no compressed candidate passed the gate" in t.why
    assert "shipped FP32 (fallback)" in r.report.read_text()  # the status in words


def test_gate_failure_is_honest(project: Path) -> None:
    _fragile(project, require_compressed=True)
    r = release(project)
    t = r.targets[0]
    assert t.status == "gate-failed" and r.exit_code == 1 and t.bundle is None
    assert not (project.parent / "rel" / "bundles").exists()
    runner = CliRunner()
    res = runner.invoke(app, ["release", str(project), "--json"])
    assert res.exit_code == 1
    assert json.loads(res.stdout)["targets"][0]["status"] == "gate-failed"


def test_config_errors_point_at_the_line(project: Path) -> None:
    text = project.read_text().replace('version = "0.1.0"', 'version = "0.1.0"\nturbo = true')
    project.write_text(text)
    with pytest.raises(InvalidInputError) as ei:
        load_release_config(project)
    line = text.splitlines().index("turbo = true") + 1
    assert f"edgemed.toml:{line}" in ei.value.found and "turbo" in ei.value.found


def test_missing_key_file(project: Path) -> None:
    shutil.rmtree(project.parent / "keys")
    with pytest.raises(InvalidInputError) as ei:
        release(project)
    assert ei.value.code == "not-found" and "publisher" in ei.value.found
