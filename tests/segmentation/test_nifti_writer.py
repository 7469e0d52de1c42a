"""NIfTI on the device (edgemed_runtime.outputs): written with nibabel, loaded back, data equal and
every voxel at the same place in the patient through the Volume's LPS affine and the file's RAS
affine (axial, oblique, left-handed grids); the refusals."""

from __future__ import annotations

import gzip
import sys
from pathlib import Path

import numpy as np
import pytest

nib = pytest.importorskip("nibabel")

from edgemed_runtime.errors import InvalidInputError, MissingDependencyError  # noqa: E402
from edgemed_runtime.outputs import nifti_bytes, nifti_image, ras_affine, write_nifti  # noqa: E402
from edgemed_runtime.volume import Volume  # noqa: E402


def oblique_volume(shape: tuple[int, int, int] = (6, 9, 11), flip: bool = False) -> Volume:
    """A volume on a rotated, anisotropic grid (slices descending in z when ``flip``)."""
    a, b = np.deg2rad(25.0), np.deg2rad(-10.0)
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    rz = np.array([[np.cos(b), -np.sin(b), 0], [np.sin(b), np.cos(b), 0], [0, 0, 1]])
    rot = rz @ rx
    aff = np.eye(4)
    # columns in index order (k, j, i): slice normal, column direction, row direction
    aff[:3, 0] = rot[:, 2] * 3.0 * (-1 if flip else 1)
    aff[:3, 1], aff[:3, 2] = rot[:, 1] * 0.9, rot[:, 0] * 0.7
    aff[:3, 3] = (12.5, -40.0, 88.0)
    rng = np.random.default_rng(0)
    return Volume(array=rng.random(shape).astype(np.float32), affine=aff)


def world_lps(vol: Volume, k: int, j: int, i: int) -> np.ndarray:
    return (vol.affine @ np.array([k, j, i, 1.0]))[:3]


@pytest.mark.parametrize("vol", [Volume.from_array(np.zeros((5, 8, 7)), spacing=(2.5, 0.8, 0.7),
                                                   origin=(-10.0, 20.0, 30.0)),
                                 oblique_volume(), oblique_volume(flip=True)],
                         ids=["axial", "oblique", "flipped"])
def test_labels_round_trip_with_the_same_world_positions(vol: Volume, tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 3, vol.shape).astype(np.int64)
    path = tmp_path / "labels.nii.gz"
    write_nifti(str(path), labels, vol)
    img = nib.load(str(path))
    data = np.asarray(img.dataobj)
    assert data.dtype == np.uint8 and data.shape == vol.shape[::-1]
    assert np.array_equal(data.transpose(2, 1, 0), labels)
    for aff in (img.affine, img.get_qform(), img.get_sform()):
        assert np.allclose(aff, ras_affine(vol), atol=1e-4)
    assert int(img.header["sform_code"]) == int(img.header["qform_code"]) == 1
    for k, j, i in [(0, 0, 0), (vol.shape[0] - 1, 2, 5), (1, vol.shape[1] - 1, vol.shape[2] - 1)]:
        ras = (img.affine @ np.array([i, j, k, 1.0]))[:3]
        lps = world_lps(vol, k, j, i)
        assert np.allclose(ras, [-lps[0], -lps[1], lps[2]], atol=1e-3)
        assert data[i, j, k] == labels[k, j, i]
    assert nib.aff2axcodes(img.affine) == nib.aff2axcodes(ras_affine(vol))


def test_probabilities_are_float32_channels_last() -> None:
    vol = oblique_volume()
    probs = np.random.default_rng(2).random((3, *vol.shape))  # float64 in
    img = nib.Nifti1Image.from_bytes(nifti_bytes(probs, vol))
    data = np.asarray(img.dataobj)
    assert data.dtype == np.float32 and data.shape == (*vol.shape[::-1], 3)
    assert np.array_equal(np.transpose(data, (3, 2, 1, 0)), probs.astype(np.float32))


def test_large_labels_are_uint16_and_gzip_bytes_decode() -> None:
    vol = oblique_volume()
    labels = np.zeros(vol.shape, np.int32)
    labels[0, 0, 0], labels[-1, -1, -1] = 300, 7
    raw = nifti_bytes(labels, vol, compress=True)
    img = nib.Nifti1Image.from_bytes(gzip.decompress(raw))
    assert np.asarray(img.dataobj).dtype == np.uint16
    assert np.array_equal(np.asarray(img.dataobj).T, labels)
    assert nifti_bytes(labels, vol, compress=True) == raw  # deterministic (no gzip time stamp)


def test_header_carries_no_dicom_text() -> None:
    img = nifti_image(np.zeros((5, 8, 7), np.uint8), Volume.from_array(np.zeros((5, 8, 7))))
    assert bytes(img.header["descrip"]).rstrip(b"\0") == b"edgemed"


def test_bad_inputs_are_refused() -> None:
    vol = oblique_volume()
    cases = {
        "mask-grid": [np.zeros(vol.shape[1:], np.uint8), np.zeros((4, 9, 11), np.uint8),
                      np.zeros((2, 6, 9, 10), np.float32)],
        "bad-labels": [np.full(vol.shape, -1, np.int16), np.full(vol.shape, 70000, np.int32)],
        "bad-probabilities": [np.full(vol.shape, np.nan, np.float32)],
    }
    for code, arrays in cases.items():
        for arr in arrays:
            with pytest.raises(InvalidInputError) as err:
                nifti_image(arr, vol)
            assert err.value.code == code, (code, arr.shape, arr.dtype)


def test_unwritable_path_is_a_typed_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(InvalidInputError) as err:
        write_nifti(str(blocker / "out.nii"), np.zeros((5, 8, 7), np.uint8),
                    Volume.from_array(np.zeros((5, 8, 7))))
    assert err.value.code == "output-not-writable"


def test_missing_nibabel_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "nibabel", None)  # import nibabel -> ImportError
    with pytest.raises(MissingDependencyError) as err:
        nifti_image(np.zeros((5, 8, 7), np.uint8), Volume.from_array(np.zeros((5, 8, 7))))
    assert "edgemed-runtime[outputs]" in (err.value.fix or "")
