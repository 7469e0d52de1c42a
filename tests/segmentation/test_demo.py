"""``edgemed demo --task segmentation`` at a reduced size: synthetic series with organ masks, a
seeded 3D UNet trained a few steps, the release (one ORT INT8 variant, isolated device check),
and a DICOM SEG for every held-out series that reads back with highdicom equal to the runtime's
labels; the phone target is a clear "not supported for 3D" row."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("highdicom")
pytest.importorskip("torch")

from edgemed.segdemo import SegDemoConfig, run_segmentation_demo, unsupported_for_3d  # noqa: E402

PROFILE = """
name = "segdemo-quick"
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


FIXED_SHAPES = """
name = "phone-fixed"
kind = "mobile"
default_variant = "ort-int8"
[host]
arch = ["aarch64"]
[[variants]]
name = "ort-int8"
backend = "onnxruntime"
passes = [
  { pass = "export_onnx", opset = 17 },
  { pass = "ort_format", target_platform = "arm", optimization_style = "fixed", fix_batch = 1 },
]
"""


def test_a_target_whose_variants_all_fix_the_shape_is_not_supported_for_3d(tmp_path: Path) -> None:
    phone = tmp_path / "phone-fixed.toml"
    phone.write_text(FIXED_SHAPES)
    why = unsupported_for_3d(str(phone))
    assert why is not None and why.startswith("not supported for 3D")
    quick = tmp_path / "segdemo-quick.toml"
    quick.write_text(PROFILE)
    assert unsupported_for_3d(str(quick)) is None


@pytest.mark.slow
def test_reduced_segmentation_demo_writes_segs_that_read_back(tmp_path: Path) -> None:
    from edgemed_runtime import Artifact, open_artifact, read_series

    from edgemed.release.segmentation import seg_readback

    profile = tmp_path / "segdemo-quick.toml"
    profile.write_text(PROFILE)
    cfg = SegDemoConfig(n_series=6, n_patients=6, shape=(16, 28, 28), steps=6,
                        targets=(str(profile), "mobile-android"))
    # mobile-android ships ORT Mobile's fixed-shape format (as of this test): a clear row
    r = run_segmentation_demo(tmp_path / "demo", cfg)
    assert r.release["exit_code"] == 0, r.release["targets"]
    assert list(r.unsupported) == ["mobile-android"]
    (t,) = r.release["targets"]
    assert t["status"] == "released" and t["device_check"]["voxels_differing"] == 0
    assert sum(r.split.values()) == 6 and r.split["test"] >= 1
    assert r.seg_files and len(r.seg_files) == len(r.volumes_ml) == r.split["test"]
    test_root = Path(r.release["out"]) / "dataset" / "test"
    with open_artifact(Artifact.load(r.artifact)) as sess:
        for seg_file, row in zip(r.seg_files, r.volumes_ml):
            vol = read_series(test_root / row["series"])
            labels = sess.predict(vol).labels
            assert np.array_equal(seg_readback(Path(seg_file), vol), labels)
    assert (tmp_path / "demo" / "demo_unet.pt").is_file()
    assert Path(r.release["report"]).is_file()


def test_each_patients_series_differ_so_a_patient_split_sees_every_orientation() -> None:
    from edgemed.segdemo import ORIENTATIONS, SPACINGS

    cfg = SegDemoConfig()
    per_patient: dict[int, list[int]] = {}
    for s in range(cfg.n_series):  # write_series_dataset: patient s % n_patients
        per_patient.setdefault(s % cfg.n_patients, []).append(s)
    for series in per_patient.values():
        assert len({ORIENTATIONS[s % len(ORIENTATIONS)] for s in series}) == len(series)
        assert len({SPACINGS[s % len(SPACINGS)] for s in series}) == len(series)
    assert set(ORIENTATIONS) == {"axial", "coronal", "sagittal", "oblique"}


def test_training_is_deterministic_and_samples_every_label() -> None:
    import torch

    from edgemed.segdemo import _crop_start, train_unet

    rng = np.random.default_rng(0)
    x = rng.normal(size=(1, 20, 20, 20)).astype(np.float32)
    y = np.zeros((20, 20, 20), np.uint8)
    y[2:4, 2:4, 2:4], y[15:18, 15:18, 15:18] = 2, 1  # a small and a larger label
    a, la = train_unet([x], [y], roi=16, steps=3, seed=5)
    b, lb = train_unet([x], [y], roi=16, steps=3, seed=5)
    assert la == lb and all(torch.equal(p, q) for p, q in zip(a.state_dict().values(),
                                                                 b.state_dict().values()))
    starts = [_crop_start(y, 16, rng, 1.0) for _ in range(200)]
    for k in (1, 2):  # labels drawn uniformly: each label lies in a good share of the crops
        hits = sum(bool((y[tuple(slice(s, s + 16) for s in st)] == k).any()) for st in starts)
        assert hits >= 80
