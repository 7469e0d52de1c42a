"""PreprocessSpec: serialisation and versions, the pipeline's steps on real files, the fast path's
tolerance, and build-time vs device-side (numpy only, torch blocked) identity."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
from pydicom.data import get_testdata_file

from edgemed.data.synthetic import make_dataset, make_slice, write_ct_slice
from edgemed_runtime.dicom import load_input, read_image
from edgemed_runtime.errors import InvalidInputError
from edgemed_runtime.preprocess import SPEC_VERSION, PreprocessSpec


def test_round_trip_and_versions():
    spec = PreprocessSpec(window=(40, 400), size=(64, 48), mean=0.5, std=0.25, channels=3,
                          layout="HWC", dtype="float16", frame=-1, spacing=(0.5, 0.5),
                          frames="pick", reduce="off")
    assert PreprocessSpec.from_dict(spec.to_dict()) == spec
    assert spec.to_dict()["version"] == SPEC_VERSION == 2
    v1 = {"window": None, "size": [224, 224], "mean": 0.0, "std": 1.0, "channels": 1,
          "layout": "CHW", "dtype": "float32", "frame": 0, "version": 1}
    old = PreprocessSpec.from_dict(v1)
    assert old.version == 1 and old.reduce == "off" and old.spacing is None
    with pytest.raises(InvalidInputError):
        PreprocessSpec.from_dict(dict(v1, version=99))
    with pytest.raises(InvalidInputError):
        PreprocessSpec.from_dict(dict(v1, colour="blue"))
    for bad in (dict(frames="some"), dict(reduce="max"), dict(spacing=(1.0, 1.0), size=None)):
        with pytest.raises(InvalidInputError):
            PreprocessSpec(**bad)


def test_layout_channels_dtype_window_override():
    path = get_testdata_file("CT_small.dcm")
    chw = load_input(path, PreprocessSpec(size=(32, 32), channels=3))
    hwc = load_input(path, PreprocessSpec(size=(32, 32), channels=3, layout="HWC", dtype="float16"))
    assert chw.shape == (3, 32, 32) and hwc.shape == (32, 32, 3) and hwc.dtype == np.float16
    np.testing.assert_allclose(np.transpose(chw, (1, 2, 0)), hwc, atol=1e-3)
    img = read_image(path)
    hu = img.pixels
    windowed = load_input(path, PreprocessSpec(size=None, window=(40, 400)))[0]
    expected = np.clip((hu - 39.5) / 399.0 + 0.5, 0, 1)
    np.testing.assert_allclose(windowed, expected, atol=1e-6)
    norm = load_input(path, PreprocessSpec(size=None, window=(40, 400), mean=0.5, std=0.25))[0]
    np.testing.assert_allclose(norm, (expected - 0.5) / 0.25, atol=1e-5)


def test_monochrome1_inverts_after_voi(tmp_path):
    rng = np.random.default_rng(0)
    hu = make_slice(rng, 64, lesion=True)
    kw = dict(patient_id="P1", study_uid="1.2.3", series_uid="1.2.3.4", instance=1,
              scanner=("A", "B"), seed=0)
    write_ct_slice(tmp_path / "m2.dcm", hu, **kw)
    write_ct_slice(tmp_path / "m1.dcm", hu, photometric="MONOCHROME1", **kw)
    spec = PreprocessSpec(size=None)
    m2, m1 = load_input(tmp_path / "m2.dcm", spec), load_input(tmp_path / "m1.dcm", spec)
    assert read_image(tmp_path / "m1.dcm").invert
    np.testing.assert_allclose(m1, m2, atol=1.5 / 399)  # displays alike (stored mirrored)


def test_multiframe_pick_and_stack(tmp_path):
    syn = make_dataset(tmp_path, n_patients=1, slices_per_patient=3, size=32, seed=1,
                       multiframe_patients=1)
    (path,) = syn.paths
    frames = [load_input(path, PreprocessSpec(size=(16, 16), frame=i)) for i in range(3)]
    assert not np.array_equal(frames[0], frames[1])
    np.testing.assert_array_equal(load_input(path, PreprocessSpec(size=(16, 16), frame=-1)), frames[2])
    stacked = load_input(path, PreprocessSpec(size=(16, 16), frames="stack"))
    assert stacked.shape == (3, 16, 16)
    np.testing.assert_array_equal(stacked, np.concatenate(frames))
    with pytest.raises(InvalidInputError):
        load_input(path, PreprocessSpec(frame=3))


def test_spacing_aware_resampling(tmp_path):
    """The same 64 mm object imaged at 0.5 mm and at 1.0 mm gives the same model input."""
    yy, xx = np.mgrid[0:128, 0:128]
    fine = np.where((yy - 64) ** 2 + (xx - 64) ** 2 < 40 ** 2, 300.0, -900.0).astype(np.float32)
    coarse = fine.reshape(64, 2, 64, 2).mean(axis=(1, 3))
    kw = dict(patient_id="P", study_uid="1.2", series_uid="1.2.1", instance=1, scanner=("A", "B"), seed=0)
    write_ct_slice(tmp_path / "fine.dcm", fine, **kw)
    write_ct_slice(tmp_path / "coarse.dcm", coarse, **kw)
    import pydicom
    for name, sp in (("fine.dcm", 0.5), ("coarse.dcm", 1.0)):
        ds = pydicom.dcmread(tmp_path / name)
        ds.PixelSpacing = [sp, sp]
        ds.save_as(tmp_path / name)
    spec = PreprocessSpec(size=(80, 80), spacing=(1.0, 1.0), window=(0, 2000))
    a, b = load_input(tmp_path / "fine.dcm", spec), load_input(tmp_path / "coarse.dcm", spec)
    assert a.shape == b.shape == (1, 80, 80)
    assert float(np.abs(a - b).mean()) < 0.01
    assert a[0, :8].max() == 0.0  # padded border (64 mm object in an 80 mm field)


FAST_FILES = ("RG1_J2KR.dcm", "RG1_J2KI.dcm", "RG3_J2KR.dcm", "RG3_J2KI.dcm", "MR2_J2KR.dcm", "MR2_J2KI.dcm")


@pytest.mark.parametrize("name", FAST_FILES)
def test_fast_path_within_tolerance(name):
    """Stated tolerance of the reduced-resolution JPEG 2000 path vs the full path, in display
    units [0, 1]: mean |d| <= 0.01, 99th percentile <= 0.06, max <= 0.15."""
    path = get_testdata_file(name)
    if path is None:
        pytest.skip("needs pydicom-data")
    spec = PreprocessSpec()
    fast = load_input(path, spec)
    full = load_input(path, PreprocessSpec(reduce="off"))
    scale = min(read_image(path, scale=1.0).stored.shape) / 224
    assert read_image(path, scale=scale).reduced >= 1  # the fast path really was taken
    d = np.abs(fast.astype(np.float64) - full)
    assert d.mean() <= 0.01 and np.quantile(d, 0.99) <= 0.06 and d.max() <= 0.15, (
        d.mean(), np.quantile(d, 0.99), d.max())


def test_build_time_and_device_side_identical(tmp_path):
    """The build path (dataset builder + array cache) and the device runtime in a fresh
    interpreter where torch / onnx / nncf cannot be imported give identical bytes."""
    from edgemed.dicom import DicomDataset, build_dataset

    syn = make_dataset(tmp_path / "syn", n_patients=3, slices_per_patient=2, size=40, seed=4,
                       monochrome1_fraction=0.5, multiframe_patients=1)
    extra = [get_testdata_file(n) for n in ("CT_small.dcm", "MR_small_RLE.dcm", "US1_J2KR.dcm", "MR2_J2KR.dcm")]
    spec = PreprocessSpec(size=(40, 40), mean=0.2, std=0.5, channels=3)
    build_dataset(syn.root, tmp_path / "ds", spec=spec, calib_count=2, decode=True)
    ds = DicomDataset.from_manifest(tmp_path / "ds", "train")
    build = {str(ds.manifest.root / ds.manifest.records[i].path): ds.cache.load(ds.manifest.root / ds.manifest.records[i].path)
             for i in range(len(ds.manifest.records))}
    for p in extra:
        if p is not None:
            build[p] = load_input(p, spec)
    np.savez(tmp_path / "build.npz", *build.values())
    import json

    (tmp_path / "job.json").write_text(json.dumps({"spec": spec.to_dict(), "paths": list(build),
                                                   "out": str(tmp_path / "device.npz")}))
    from edgemed.release.device_check import import_blocker

    code = import_blocker() + textwrap.dedent("""
        import json
        import numpy as np
        from edgemed_runtime.dicom import load_input
        from edgemed_runtime.preprocess import PreprocessSpec
        job = json.load(open(sys.argv[1]))
        spec = PreprocessSpec.from_dict(job["spec"])
        np.savez(job["out"], *[load_input(p, spec) for p in job["paths"]])
        print('torch' in sys.modules)
    """)
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "job.json")], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "False"
    b, d = np.load(tmp_path / "build.npz"), np.load(tmp_path / "device.npz")
    assert len(b.files) == len(d.files) >= 8
    for k in b.files:
        assert b[k].dtype == d[k].dtype and np.array_equal(b[k], d[k]), k


@pytest.mark.parametrize("name", ("JPEG2000.dcm", "CT_small.dcm", "MR_small_RLE.dcm"))
def test_affine_resample_first_equals_standard_order(name):
    """Without a VOI window the display transform is affine, so load_input resamples first;
    the result equals the standard order (LUTs, then resize) up to float rounding."""
    path = get_testdata_file(name)
    img = read_image(path)
    spec = PreprocessSpec()
    if img.affine() is None:
        pytest.skip("this file has a VOI window")
    np.testing.assert_allclose(load_input(path, spec), spec.finish(img.display(), img.spacing),
                               atol=1e-6)


def test_palette_grey_shortcut_equals_rgb_path():
    """One-channel input from PALETTE COLOR: channel mean first equals RGB -> resize -> mean."""
    path = get_testdata_file("OBXXXX1A.dcm")
    img = read_image(path)
    spec = PreprocessSpec()
    np.testing.assert_allclose(load_input(path, spec), spec.finish(img.display(), img.spacing), atol=1e-5)


@pytest.mark.parametrize("shape", [(37, 53), (128, 128), (600, 410), (1024, 256)])
def test_resize_area_matches_pillow_bilinear(shape):
    """The numpy resampler is the filter Pillow's BILINEAR resize uses (checked against Pillow)."""
    from PIL import Image

    from edgemed_runtime.preprocess import resize_area

    img = np.random.default_rng(sum(shape)).random(shape, dtype=np.float32)
    for size in ((224, 224), (19, 301)):
        ref = np.asarray(Image.fromarray(img).resize(size[::-1], Image.Resampling.BILINEAR))
        np.testing.assert_allclose(resize_area(img, size), ref, atol=2e-6)
    rgb = np.stack([img, img * 0.5, 1 - img], axis=-1)
    got = resize_area(rgb, (32, 48))
    for c in range(3):
        np.testing.assert_allclose(got[..., c], resize_area(np.ascontiguousarray(rgb[..., c]), (32, 48)), atol=1e-6)


@pytest.mark.parametrize("name", ("US1_UNCR.dcm", "SC_rgb_jpeg_dcmtk.dcm", "OBXXXX1A.dcm"))
def test_colour_to_one_channel_equals_mean_of_rgb_input(name):
    """channels=1 from colour takes the channel mean inside the resampler; it equals resizing the
    three channels and averaging them."""
    path = get_testdata_file(name)
    if path is None:
        pytest.skip("needs pydicom-data")
    img = read_image(path)
    rgb = PreprocessSpec(channels=3).finish(img.display(), img.spacing)
    np.testing.assert_allclose(load_input(path, PreprocessSpec()), rgb.mean(axis=0, keepdims=True), atol=1e-5)
