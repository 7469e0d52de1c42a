"""Every pydicom test file that pydicom itself decodes is decoded by edgemed with equal arrays:
decoded values identical, display values (Modality LUT -> VOI -> MONOCHROME1) equal to pydicom's
apply_modality_lut / apply_voi_lut within float32 rounding."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from edgemed_runtime.dicom import read_image

from .reference import pydicom_test_files, reference_display

FILES = pydicom_test_files()
MIN_COMPARED = 100  # of pydicom's offline test files (155 of 239 decode with this lock file)


def _pydicom_decodes(path):
    import pydicom

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(path)
            if "PixelData" not in ds:
                return None
            return ds, ds.pixel_array
    except Exception:
        return None


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_matches_pydicom(path):
    got = _pydicom_decodes(path)
    if got is None:
        pytest.skip("pydicom itself does not decode this file (or it has no pixels)")
    ds, arr = got
    n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    samples = int(ds.get("SamplesPerPixel", 1))
    frames = sorted({0, n_frames - 1})
    for frame in frames:
        ref = arr[frame] if n_frames > 1 and arr.ndim == (3 if samples == 1 else 4) else arr
        img = read_image(path, frame=frame)
        if str(ds.PhotometricInterpretation).strip().upper() != "PALETTE COLOR":
            assert img.stored.dtype == ref.dtype, path.name
            assert np.array_equal(img.stored, ref), f"{path.name}: decoded values differ"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            want = reference_display(ds, ref, frame)
        got_display = img.display()
        assert got_display.shape == want.shape
        np.testing.assert_allclose(got_display, want, rtol=0, atol=2e-6, err_msg=path.name)


def test_enough_files_are_compared():
    """The comparison above is not vacuous, whatever else runs: the test data is installed and
    pydicom decodes at least ``MIN_COMPARED`` of its files (the others are skipped there)."""
    compared = sum(_pydicom_decodes(p) is not None for p in FILES)
    print(f"\nedgemed vs pydicom: {compared} of {len(FILES)} files compared (the rest: no pixel "
          "data, not DICOM, or pydicom cannot decode them)")
    assert compared >= MIN_COMPARED, f"only {compared} of {len(FILES)} reference files decode"
