"""``edgemed release`` for a segmentation model (``[model] task = "segmentation"``): synthetic CT
series with organ masks split by patient, a seeded 3D UNet built with the Dice / HD95 gate, the
device check writing a DICOM SEG on a held-out series in a runtime-only process (read back with
highdicom, equal to the build's labels), the report's segmentation figures; the project file's
refusals."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("highdicom")
torch = pytest.importorskip("torch")

from edgemed.data.synthetic_series import write_series_dataset  # noqa: E402
from edgemed.errors import InvalidInputError  # noqa: E402
from edgemed.release import release  # noqa: E402
from edgemed.release.config import load_release_config  # noqa: E402
from edgemed.release.segmentation import seg_gate, seg_readback  # noqa: E402
from edgemed.segdemo import demo_unet  # noqa: E402

PROJECT = """
[model]
source = "edgemed.segdemo:demo_unet"
weights = "unet.pt"
task = "segmentation"
input = [1, 1, 16, 16, 16]
labels = ["background", "liver", "kidney"]

[data]
dicom = "series"
split = [0.5, 0.25, 0.25]

[preprocess]
kind = "volume"
spacing = [2.0, 2.0, 2.0]
intensity = [-200.0, 300.0, 0.0, 1.0]

[inference]
roi_size = [16, 16, 16]
sw_batch_size = 2

[release]
family = "seg-ct"
version = "0.1.0"
counter = 1
targets = ["{target}"]
out = "rel"
device_check = "host"

[signing]
publisher_key = "keys/publisher.key"
publisher_pub = "keys/publisher.pub"
devices = ["keys/dev1.pub"]
verify_device_key = "keys/dev1.key"

[bench]
enabled = false
"""

# one ORT INT8 variant, a host rule this machine does not match: one build, nothing timed
ONE_VARIANT = """
name = "seg-quick"
kind = "cpu"
default_variant = "ort-int8-rr"
[host]
arch = ["riscv64"]
[[variants]]
name = "ort-int8-rr"
backend = "onnxruntime"
passes = [
  { pass = "export_onnx", opset = 17 },
  { pass = "quantize_onnxruntime", activation_type = "uint8", weight_type = "int8", per_channel = true, calibration = "minmax", reduce_range = true },
]
"""


def _project(tmp: Path, text: str = PROJECT) -> Path:
    (tmp / "seg-quick.toml").write_text(ONE_VARIANT)
    path = tmp / "edgemed.toml"
    path.write_text(text.format(target=tmp / "seg-quick.toml"))
    return path


@pytest.fixture(scope="module")
def shipped(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    from edgemed.bundle import generate_keypair

    tmp = tmp_path_factory.mktemp("segrel")
    write_series_dataset(tmp / "series", n_series=6, n_patients=6, seed=3, shape=(16, 28, 28),
                         masks=True)
    generate_keypair(tmp / "keys", kind="publisher", name="publisher")
    generate_keypair(tmp / "keys", kind="device", name="dev1")
    torch.manual_seed(0)
    torch.save(demo_unet().state_dict(), tmp / "unet.pt")
    return tmp, release(_project(tmp))


def test_segmentation_release_ships_and_the_device_seg_reads_back(shipped: tuple[Path, object]) -> None:
    from edgemed_runtime import read_series

    tmp, rel = shipped
    assert rel.ok and rel.exit_code == 0, [t.error for t in rel.targets]
    (t,) = rel.targets
    assert t.status == "released" and t.chosen == "ort-int8-rr"
    assert t.gate["task"] == "segmentation" and t.gate["labelled"] and t.gate["n"] >= 1
    assert set(t.gate["labels"]) == {"liver", "kidney"}
    dc = t.device_check
    assert dc["ok"] and dc["voxels_differing"] == 0 and dc["voxels"] > 0 and not dc["leaked_modules"]
    assert "outputs" in t.device_install
    # the SEG the device wrote reads back (highdicom) equal to the build's labels
    test_rows = list(csv.DictReader(open(tmp / "rel" / "dataset" / "test" / "labels.csv")))
    series = tmp / "rel" / "dataset" / "test" / test_rows[0]["path"]
    vol = read_series(series)
    from edgemed_runtime import Artifact, open_artifact

    with open_artifact(Artifact.load(t.artifact)) as sess:
        labels = sess.predict(vol).labels
    got = seg_readback(Path(dc["seg"]), vol)
    assert got.shape == labels.shape and np.array_equal(got, labels)


def test_split_is_by_patient(shipped: tuple[Path, object]) -> None:
    tmp, rel = shipped
    patients = {}
    for split in ("train", "val", "test"):
        rows = list(csv.DictReader(open(tmp / "rel" / "dataset" / split / "labels.csv")))
        patients[split] = {r["patient_id"] for r in rows}
        for r in rows:  # every series and mask is there
            assert (tmp / "rel" / "dataset" / split / r["path"]).is_dir()
            assert (tmp / "rel" / "dataset" / split / r["mask"]).is_file()
    assert all(patients.values())
    assert not (patients["train"] & patients["val"]) and not (patients["val"] & patients["test"])
    assert rel.dataset["leak_check"]["ok"]


def test_report_has_segmentation_figures_and_no_raw_values(shipped: tuple[Path, object]) -> None:
    tmp, rel = shipped
    page = Path(rel.report).read_text()
    text = re.sub(r"<[^>]+>", " ", re.sub(r"<(style|script)>.*?</\1>", "", page, flags=re.S))
    assert "Dice FP32" in text and "mean HD95 (mm)" in text and "Dice of shipped vs FP32" in text
    assert "per-case Dice" in page and "slice overlays" in page
    assert page.count("data:image/png;base64,") >= 2
    assert "None" not in text and "{" not in text and "accuracy FP32" not in text
    assert list(Path(rel.out).glob("dice-*.png"))
    assert (Path(rel.targets[0].artifact).parent / "overlays.png").is_file()


def test_a_second_run_skips_every_step(shipped: tuple[Path, object]) -> None:
    tmp, _ = shipped
    again = release(_project(tmp))
    assert again.ok
    steps = again.targets[0].steps
    assert "outputs" in again.targets[0].device_install  # from the recorded check
    assert again.skipped_steps >= 4 and steps.pop("register") == "ran"  # idempotent, always
    assert all(v.startswith("skipped") or v == "not run" for v in steps.values()), steps


@pytest.mark.parametrize("edit,needle", [
    (('kind = "volume"', ""), "goes with"),
    (("[inference]\nroi_size = [16, 16, 16]\nsw_batch_size = 2", ""), "[inference]"),
    (('task = "segmentation"', 'task = "detection"'), "task"),
])
def test_project_file_refusals(tmp_path: Path, edit: tuple[str, str], needle: str) -> None:
    path = _project(tmp_path, PROJECT.replace(*edit))
    with pytest.raises(InvalidInputError) as e:
        load_release_config(path)
    assert e.value.code == "bad-config" and needle in str(e.value.found)


def test_classification_limits_are_refused_for_segmentation(tmp_path: Path) -> None:
    path = _project(tmp_path, PROJECT + "\n[gate]\nmax_accuracy_drop = 0.02\nmax_dice_drop = 0.01\n")
    cfg = load_release_config(path)
    with pytest.raises(InvalidInputError) as e:
        seg_gate(cfg)
    assert e.value.code == "bad-config" and "max_accuracy_drop" in str(e.value.found)
    ok = load_release_config(_project(tmp_path, PROJECT + "\n[gate]\nmax_dice_drop = 0.02\n"))
    assert seg_gate(ok).max_dice_drop == 0.02


def test_series_without_masks_are_refused(tmp_path: Path) -> None:
    from edgemed.bundle import generate_keypair

    write_series_dataset(tmp_path / "series", n_series=2, seed=1, shape=(8, 16, 16), masks=False)
    generate_keypair(tmp_path / "keys", kind="publisher", name="publisher")
    generate_keypair(tmp_path / "keys", kind="device", name="dev1")
    torch.save(demo_unet().state_dict(), tmp_path / "unet.pt")
    with pytest.raises(InvalidInputError) as e:
        release(_project(tmp_path))
    assert e.value.code == "bad-labels" and "mask" in e.value.message


def test_report_text_passes_the_report_checks_and_renders(shipped: tuple[Path, object],
                                                          tmp_path: Path) -> None:
    """The checks of tests/release/test_report_html.py on the segmentation report: no raw
    values in the visible text; in headless Chromium (where installed) every image loads."""
    import subprocess

    from tests.release.test_report_html import CHROMIUM, FORBIDDEN, visible_text

    _, rel = shipped
    page = Path(rel.report).read_text()
    text = visible_text(page)
    assert not [f for f in FORBIDDEN if f in text], [f for f in FORBIDDEN if f in text]
    if CHROMIUM is None:
        return
    dom = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
                          f"--user-data-dir={tmp_path}", "--virtual-time-budget=10000",
                          "--dump-dom", Path(rel.report).resolve().as_uri()],
                         capture_output=True, text=True, timeout=120).stdout
    loaded = re.search(r'data-images-loaded="(\d+)/(\d+)"', dom)
    assert loaded and loaded.group(1) == loaded.group(2) and int(loaded.group(2)) >= 2
