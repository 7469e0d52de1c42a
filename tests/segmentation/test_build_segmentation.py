"""Segmentation end to end: a small 3D UNet trained on synthetic CT series with organ masks,
built with task="segmentation" and a sliding-window inference spec, gated per case (Dice /
HD95 / surface Dice against the NIfTI masks), run on the device (labels on the original grid,
DICOM SEG and NIfTI read back), and the bad inputs of issue 16 at build level."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import edgemed
import edgemed_runtime as rt
from edgemed.data.synthetic_series import write_series_dataset
from edgemed.errors import InvalidInputError
from edgemed.pipeline import BuildOptions
from edgemed.tasks.segmentation import load_cases

monai_nets = pytest.importorskip("monai.networks.nets")

SPEC = rt.VolumeSpec(axcodes="RAS", spacing=(2.0, 2.0, 2.0), intensity=(-200.0, 300.0, 0.0, 1.0))
ROI = 16
INF = rt.InferenceSpec(mode="sliding_window", roi_size=(ROI,) * 3, overlap=0.25, blend="gaussian",
                       sw_batch_size=4)
LABELS = ("background", "liver", "kidney")


def _unet() -> torch.nn.Module:
    torch.manual_seed(0)
    return monai_nets.UNet(spatial_dims=3, in_channels=1, out_channels=3, channels=(8, 16, 32),
                           strides=(2, 2), num_res_units=0)


def _train(net: torch.nn.Module, root: Path, steps: int = 60) -> torch.nn.Module:
    """A few seeded Adam steps on ROI crops of the model-grid volumes and masks."""
    vols, truths = load_cases(root)
    data = [(SPEC.apply(v)[0], SPEC.apply_labels(m, affine=v.affine)) for v, m in zip(vols, truths)]
    opt = torch.optim.Adam(net.parameters(), 1e-2)
    rng = np.random.default_rng(0)
    for _ in range(steps):
        x, y = data[int(rng.integers(len(data)))]
        s = [int(rng.integers(0, max(1, d - ROI + 1))) for d in x.shape[1:]]
        win = tuple(slice(a, a + ROI) for a in s)
        xb, yb = x[(slice(None), *win)], y[win]
        if xb.shape[1:] != (ROI,) * 3:
            continue
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(
            net(torch.from_numpy(np.ascontiguousarray(xb))[None]),
            torch.from_numpy(np.ascontiguousarray(yb).astype(np.int64))[None])
        loss.backward()
        opt.step()
    return net.eval()


@pytest.fixture(scope="module")
def series(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_series_dataset(tmp_path_factory.mktemp("seg") / "data", n_series=6, seed=1,
                                shape=(20, 32, 32), masks=True)


@pytest.fixture(scope="module")
def trained(series: Path) -> torch.nn.Module:
    return _train(_unet(), series)


@pytest.fixture(scope="module")
def built(trained: torch.nn.Module, series: Path, tmp_path_factory: pytest.TempPathFactory) -> rt.Artifact:
    return edgemed.build(trained, torch.zeros(1, 1, ROI, ROI, ROI), calibration=series,
                         validation=series, preprocess=SPEC, inference=INF, task="segmentation",
                         labels=LABELS, target="cpu-x86", quiet=True,
                         out=tmp_path_factory.mktemp("segbuild") / "out",
                         options=BuildOptions(select="default"))


def test_segmentation_build_gates_per_case_against_the_masks(built: rt.Artifact) -> None:
    assert built.task.name == "segmentation" and built.io.dynamic_spatial
    assert built.inference == INF and built.preprocess == SPEC
    sel = next(r for r in built.provenance if r["pass"] == "select_variant")
    gate = next(g for g in sel["candidates"].values() if g)
    assert gate["task"] == "segmentation" and gate["labelled"] and gate["n"] == 6
    assert set(gate["reference"]) >= {"dice", "hd95_mm", "surface_dice"}
    assert 0.0 <= gate["reference"]["dice"] <= 1.0
    assert gate["metric_settings"]["monai_version"]
    ni = gate["non_inferiority"]["dice"]
    assert ni["ci"][0] <= ni["difference"] <= ni["ci"][1]
    export = next(r for r in built.provenance if r["pass"] == "export_onnx")
    assert "second size" in export["parity"]  # dynamic spatial dims checked at two sizes


def test_device_labels_on_the_original_grid_and_seg_nifti_read_back(built: rt.Artifact,
                                                                      series: Path) -> None:
    import highdicom as hd

    folder = sorted({p.parent for p in series.rglob("*.dcm")})[0]
    vol = rt.read_series(folder)
    with rt.open(built.path) as sess:
        res = sess.predict(folder, probabilities=True)
        again = sess.predict(vol)
    assert isinstance(res, rt.SegmentationResult)
    assert res.labels.shape == vol.shape and res.label_names == ("liver", "kidney")
    np.testing.assert_array_equal(res.labels, again.labels)
    assert res.probabilities is not None and res.probabilities.shape == (3, *vol.shape)
    np.testing.assert_allclose(res.probabilities.sum(0), 1.0, atol=1e-3)
    seg = hd.seg.segread(__import__("io").BytesIO(rt.seg_bytes(
        res.labels, vol, label_names=res.label_names, algorithm=("unet", "1"))))
    assert seg.FrameOfReferenceUID == vol.frame_of_reference_uid
    nii = res.to_nifti()
    assert np.array_equal(np.transpose(np.asanyarray(nii.dataobj), (2, 1, 0)), res.labels)


def test_output_channels_must_match_the_labels(trained: torch.nn.Module, series: Path,
                                               tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError) as err:
        edgemed.build(trained, torch.zeros(1, 1, ROI, ROI, ROI), calibration=series,
                      preprocess=SPEC, inference=INF, task="segmentation",
                      labels=("background", "liver"), target="cpu-x86", quiet=True,
                      out=tmp_path / "o")
    assert err.value.code == "label-mismatch"


def test_classification_task_refuses_a_per_voxel_output(trained: torch.nn.Module, series: Path,
                                                        tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError) as err:
        edgemed.build(trained, torch.zeros(1, 1, ROI, ROI, ROI), calibration=series,
                      preprocess=SPEC, target="cpu-x86", quiet=True, out=tmp_path / "o")
    assert err.value.code == "bad-output" and "segmentation" in (err.value.fix or "")


def _with_mask(series: Path, tmp_path: Path, edit: object) -> Path:
    """A copy of the dataset whose first mask is replaced by ``edit(mask_img) -> img``."""
    import nibabel as nib

    root = tmp_path / "data"
    shutil.copytree(series, root)
    with open(root / "labels.csv", newline="") as f:
        first = next(csv.DictReader(f))
    path = root / first["mask"]
    nib.save(edit(nib.load(str(path))), str(path))  # type: ignore[operator]
    return root


def test_a_mask_on_another_grid_is_refused(series: Path, tmp_path: Path) -> None:
    import nibabel as nib

    def shifted(img: nib.Nifti1Image) -> nib.Nifti1Image:
        aff = img.affine.copy()
        aff[:3, 3] += 5.0
        return nib.Nifti1Image(np.asanyarray(img.dataobj), aff)

    with pytest.raises(InvalidInputError) as err:
        load_cases(_with_mask(series, tmp_path, shifted))
    assert err.value.code == "mask-grid"


def test_labels_in_the_mask_beyond_the_label_list_are_refused(built: rt.Artifact, series: Path,
                                                              tmp_path: Path) -> None:
    import nibabel as nib

    from edgemed.tasks.segmentation import SegmentationEvaluator

    def extra_label(img: nib.Nifti1Image) -> nib.Nifti1Image:
        data = np.asanyarray(img.dataobj).copy()
        data[0, 0, 0] = 7
        return nib.Nifti1Image(data, img.affine)

    vols, truths = load_cases(_with_mask(series, tmp_path, extra_label))
    ev = SegmentationEvaluator(vols, truths, ("liver", "kidney"))
    ref = ev.outputs(built, "onnxruntime", {})
    with pytest.raises(InvalidInputError) as err:
        ev.verdict(ref, ref)
    assert err.value.code == "bad-labels"


def test_a_segmentation_model_given_one_2d_file(built: rt.Artifact, series: Path) -> None:
    one = next(series.rglob("*.dcm"))
    with rt.open(built.path) as sess, pytest.raises(rt.InvalidInputError) as err:
        sess.predict(str(one))
    assert err.value.code == "series-single"


def test_cli_predict_writes_one_seg_per_series(built: rt.Artifact, series: Path, tmp_path: Path) -> None:
    import io
    import json as jsonlib

    import highdicom as hd
    from typer.testing import CliRunner

    from edgemed.cli import app

    folders = sorted({p.parent for p in series.rglob("*.dcm")})[:2]
    out = tmp_path / "segs"
    res = CliRunner().invoke(app, ["predict", str(built.path), *map(str, folders),
                                   "--seg-out", str(out), "--json"])
    assert res.exit_code == 0, res.output
    rows = jsonlib.loads(res.output)["predictions"]
    assert [r["status"] for r in rows] == ["ok", "ok"]
    with rt.open(built.path) as sess:
        for row, folder in zip(rows, folders):
            seg = hd.seg.segread(io.BytesIO(Path(row["seg"]).read_bytes()))
            labels = sess.predict(folder).labels
            back = seg.get_pixels_by_source_instance(
                source_sop_instance_uids=list(rt.read_series(folder).sop_uids),
                combine_segments=True, assert_missing_frames_are_empty=True)
            assert set(row["volumes_ml"]) == {"liver", "kidney"}
            np.testing.assert_array_equal(back, labels)  # the SEG on disk is the label volume
