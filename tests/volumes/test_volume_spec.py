"""VolumeSpec (spec version 3): parity with MONAI's Orientation / Spacing / ScaleIntensityRange /
ResizeWithPadOrCrop and Invertd on the same input, labels (nearest) equal except at exact ties,
serialisation (exact JSON), the golden output, bad input, and the device side without torch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest

from edgemed_runtime.artifact import Artifact
from edgemed_runtime.errors import InvalidInputError
from edgemed_runtime.iospec import IOSpec
from edgemed_runtime.preprocess import PreprocessSpec
from edgemed_runtime.specs import spec_from_dict
from edgemed_runtime.volume import Placement, Volume, VolumeSpec
from edgemed_runtime.volume.orient import LPS_TO_RAS
from edgemed_runtime.volume.placement import take_window

torch = pytest.importorskip("torch")
monai_t = pytest.importorskip("monai.transforms")
from monai.data import MetaTensor  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")  # MONAI's Orientation labels default

GOLDEN = Path(__file__).parent / "golden" / "volume_spec_v3.npz"
REL_TOL = 1e-5  # max |edgemed - MONAI| / value range; measured ~1.2e-7 (float32 rounding)


def _rot(axis: int, deg: float) -> np.ndarray:
    t = np.deg2rad(deg)
    c, s = np.cos(t), np.sin(t)
    m = np.eye(3)
    i, j = [k for k in range(3) if k != axis]
    m[i, i], m[i, j], m[j, i], m[j, j] = c, -s, s, c
    return m


def _affine(directions: np.ndarray, spacing: tuple[float, float, float],
            origin: tuple[float, float, float], shear: float = 0.0) -> np.ndarray:
    """voxel (k, j, i) -> LPS: column a = direction of array axis a times its spacing."""
    aff = np.eye(4)
    aff[:3, :3] = directions * np.asarray(spacing)
    aff[:3, 0] += shear * aff[:3, 1]  # gantry tilt: slices slide along the rows
    aff[:3, 3] = origin
    return aff


# (k, j, i) directions as columns (LPS)
AXIAL = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
CORONAL_FLIPPED = _rot(0, 17) @ _rot(2, -11) @ np.array([[0.0, 0.0, -1.0], [1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
SAGITTAL = _rot(1, 8) @ np.array([[-1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])

GEOMETRIES = {
    "axial": (AXIAL, (2.5, 0.8, 0.7), 0.0),
    "coronal-oblique-flipped": (CORONAL_FLIPPED, (2.5, 0.8, 0.7), 0.0),
    "sagittal-oblique": (SAGITTAL, (1.2, 0.9, 1.0), 0.0),
    "sheared": (CORONAL_FLIPPED, (2.0, 0.8, 0.7), 0.3),
}
SPECS = {
    "full": VolumeSpec(axcodes="RAS", spacing=(1.1, 1.3, 0.9), intensity=(-500.0, 500.0, 0.0, 1.0),
                       size=(24, 20, 32)),
    "lps-upsample-pad": VolumeSpec(axcodes="LPS", spacing=(0.6, 0.5, 0.75), intensity=(-300, 700, -1, 1),
                                   clip=False, size=(40, 64, 48), pad_value=-2.0),
    "no-orientation": VolumeSpec(axcodes=None, spacing=(1.5, 1.5, 1.5)),
    "orientation-crop-only": VolumeSpec(axcodes="RAS", size=(16, 30, 12)),
}


def _volume(geometry: str, shape: tuple[int, int, int] = (20, 24, 28), seed: int = 0) -> Volume:
    """Smooth structure plus noise (so interpolation errors are visible), modality units."""
    directions, spacing, shear = GEOMETRIES[geometry]
    rng = np.random.default_rng(seed)
    k, j, i = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    arr = (800 * np.exp(-(k ** 2 + j ** 2 + i ** 2) * 3) - 400 + rng.normal(0, 120, shape)).astype(np.float32)
    if geometry == "axial":
        return Volume.from_array(arr, spacing=spacing, origin=(12.0, -30.5, 41.0))
    return Volume(array=arr, affine=_affine(directions, spacing, (12.0, -30.5, 41.0), shear))


def _monai_keys(spec: VolumeSpec, keys: list[str], mode: str = "bilinear") -> list:
    """The MONAI dict transforms a VolumeSpec stands for (MONAI's defaults otherwise)."""
    steps = []
    if spec.axcodes is not None:
        steps.append(monai_t.Orientationd(keys, axcodes=spec.axcodes))
    if spec.spacing is not None:
        steps.append(monai_t.Spacingd(keys, pixdim=spec.spacing, mode=mode))
    if spec.intensity is not None:
        a_min, a_max, b_min, b_max = spec.intensity
        steps.append(monai_t.ScaleIntensityRanged(keys, a_min, a_max, b_min, b_max, clip=spec.clip))
    if spec.size is not None:
        steps.append(monai_t.ResizeWithPadOrCropd(keys, spec.size, value=spec.fill))
    return steps


def _metatensor(array: np.ndarray, lps_affine: np.ndarray) -> MetaTensor:
    """MONAI's convention: channel-first (1, k, j, i) with the RAS affine."""
    return MetaTensor(torch.from_numpy(np.ascontiguousarray(array[None])),
                      affine=torch.as_tensor(LPS_TO_RAS @ lps_affine))


def _monai(spec: VolumeSpec, volume: Volume) -> tuple[dict, object]:
    pre = monai_t.Compose(_monai_keys(spec, ["image"]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pre({"image": _metatensor(volume.array, volume.affine)}), pre


def _ties(xform: np.ndarray, out_shape: tuple[int, ...], in_shape: tuple[int, ...]) -> np.ndarray:
    """Output voxels where some (clamped) input coordinate is within 1e-6 of a half-integer:
    nearest-neighbour ties, where float rounding may pick either side."""
    grid = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float64) for n in out_shape], indexing="ij"))
    coords = np.tensordot(xform[:3, :3], grid, axes=1) + xform[:3, 3, None, None, None]
    coords = np.clip(coords, 0, np.asarray(in_shape, dtype=np.float64)[:, None, None, None] - 1)
    return (np.abs(coords - np.floor(coords) - 0.5) < 1e-6).any(axis=0)


@pytest.mark.parametrize("geometry", list(GEOMETRIES))
@pytest.mark.parametrize("name", list(SPECS))
def test_apply_matches_monai(geometry, name):
    spec, volume = SPECS[name], _volume(geometry)
    ours, place = spec.apply(volume)
    ref, _ = _monai(spec, volume)
    theirs = ref["image"]
    assert ours.shape == tuple(theirs.shape) and ours.dtype == np.float32
    np.testing.assert_allclose(place.ras_affine, np.asarray(theirs.affine), atol=1e-9)
    value_range = (spec.intensity[3] - spec.intensity[2]) if spec.intensity else float(np.ptp(volume.array))
    assert np.abs(ours - theirs.numpy()).max() <= REL_TOL * value_range
    assert place.shape == ours.shape[1:] and Placement.from_dict(json.loads(json.dumps(place.to_dict()))) == place


@pytest.mark.parametrize("geometry", ["axial", "coronal-oblique-flipped", "sheared"])
def test_invert_matches_monai_invertd(geometry):
    spec, volume = SPECS["full"], _volume(geometry)
    ours, place = spec.apply(volume)
    d, pre = _monai(spec, volume)
    pred = np.concatenate([ours, 1.0 - ours]).astype(np.float32)  # a 2-class "probability" map
    labels = (ours > 0.45).astype(np.float32) + (ours > 0.6)
    img = d["image"]
    for key, arr in (("pred", pred), ("label", labels)):
        d[key] = MetaTensor(torch.from_numpy(arr.copy()), affine=img.affine,
                            applied_operations=list(img.applied_operations))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        back = monai_t.Invertd(keys="pred", transform=pre, orig_keys="image", nearest_interp=False)(dict(d))
        back_lab = monai_t.Invertd(keys="label", transform=pre, orig_keys="image", nearest_interp=True)(dict(d))
    linear = spec.invert(pred, place)
    assert linear.shape == (2, *volume.shape) == tuple(back["pred"].shape)
    assert np.abs(linear - back["pred"].numpy()).max() <= REL_TOL
    nearest = spec.invert(labels.astype(np.uint8), place, mode="nearest")
    assert nearest.dtype == np.uint8 and nearest.shape == (1, *volume.shape)
    differ = nearest[0] != back_lab["label"].numpy()[0]
    inv = np.linalg.inv(place.sample)
    ties = _ties(inv, place.oriented_shape, place.resampled_shape)
    from edgemed_runtime.volume.orient import unorient

    assert not (differ & ~unorient(ties, place.flips, place.transpose)).any()
    assert differ.sum() <= 0.05 * differ.size


@pytest.mark.parametrize("geometry", list(GEOMETRIES))
def test_labels_nearest_equal_except_ties(geometry):
    spec, volume = SPECS["full"], _volume(geometry)
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 4, volume.shape).astype(np.int16)
    ours = spec.apply_labels(volume.evolve(array=labels))
    assert ours.dtype == np.int16 and np.array_equal(ours, spec.apply_labels(labels, affine=volume.affine))
    pre = monai_t.Compose(_monai_keys(VolumeSpec(axcodes=spec.axcodes, spacing=spec.spacing, size=spec.size),
                                      ["label"], mode="nearest"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = pre({"label": _metatensor(labels.astype(np.float32), volume.affine)})["label"].numpy()[0]
    place = spec.plan(volume.shape, volume.affine)
    assert ours.shape == theirs.shape == place.shape
    ties = take_window(_ties(place.sample, place.resampled_shape, place.oriented_shape)[None],
                       place.offset, place.shape, False)[0]
    differ = ours != theirs
    assert not (differ & ~ties).any()  # every difference is at an exact half-voxel tie
    assert differ.sum() <= 0.05 * differ.size


def test_invert_undoes_apply_on_a_smooth_volume():
    spec = VolumeSpec(axcodes="RAS", spacing=(1.0, 1.0, 1.0), size=(40, 40, 40))
    k, j, i = np.meshgrid(*[np.linspace(0, 1, n) for n in (16, 30, 30)], indexing="ij")
    volume = Volume(array=(100 * k + 50 * j - 30 * i).astype(np.float32),
                    affine=_affine(CORONAL_FLIPPED, (2.0, 0.8, 0.9), (0.0, 0.0, 0.0)))
    model, place = spec.apply(volume)
    back = spec.invert(model, place)[0]
    # linear interpolation reproduces a linear field wherever the model grid covers the source
    # (MONAI's grid ends up to half a target voxel short of the source's far edge: border values
    # there); the crop only padded here, so it lost nothing
    assert max(place.offset) <= 0
    from edgemed_runtime.volume.orient import unorient

    grid = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float64) for n in place.oriented_shape], indexing="ij"))
    inv = np.linalg.inv(place.sample)
    coords = np.tensordot(inv[:3, :3], grid, axes=1) + inv[:3, 3, None, None, None]
    limit = np.asarray(place.resampled_shape, dtype=np.float64)[:, None, None, None] - 1
    covered = unorient(((coords >= -1e-9) & (coords <= limit + 1e-9)).all(axis=0), place.flips, place.transpose)
    assert covered.mean() > 0.8
    np.testing.assert_allclose(back[covered], volume.array[covered], atol=1e-3)


def test_channels_dtype_and_padding_value():
    volume = _volume("axial", shape=(6, 8, 10))
    spec = VolumeSpec(size=(12, 12, 12), intensity=(-400, 400, 0.25, 1.0), channels=3, dtype="float16")
    out, place = spec.apply(volume)
    assert out.shape == (3, 12, 12, 12) and out.dtype == np.float16
    assert np.array_equal(out[0], out[2]) and spec.fill == 0.25
    assert (out[0, 0] == np.float16(0.25)).all()  # padded planes take b_min
    assert VolumeSpec(size=(12, 12, 12)).fill == 0.0 and VolumeSpec(pad_value=-1).fill == -1.0


def test_round_trip_exact_json_and_kind_dispatch():
    spec = VolumeSpec(axcodes="ras", spacing=(1.5, 1.5, 2), intensity=(-1000, 1000, 0, 1),
                      size=(96, 96, 64))
    assert spec.axcodes == "RAS"
    assert json.dumps(spec.to_dict(), sort_keys=True) == (
        '{"axcodes": "RAS", "channels": 1, "clip": true, "dtype": "float32", "intensity": [-1000.0, '
        '1000.0, 0.0, 1.0], "interpolation": "linear", "kind": "volume", "pad_value": null, "size": '
        '[96, 96, 64], "spacing": [1.5, 1.5, 2.0], "version": 3}')
    assert VolumeSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    assert spec_from_dict(spec.to_dict()) == spec
    assert spec_from_dict(PreprocessSpec().to_dict()) == PreprocessSpec()
    art = Artifact(path=Path("."), format="onnx", model_file="m.onnx",
                   io=IOSpec(input_name="x", input_shape=(1, 1, 96, 96, 64)), preprocess=spec)
    assert Artifact.from_dict(art.to_dict(), ".").preprocess == spec
    for bad in (dict(spec.to_dict(), kind="surface"), dict(spec.to_dict(), colour="blue"),
                dict(spec.to_dict(), version=4), dict(spec.to_dict(), version=2), [1, 2]):
        with pytest.raises(InvalidInputError) as e:
            spec_from_dict(bad)  # type: ignore[arg-type]
        assert e.value.code == "bad-volume-spec"
    with pytest.raises(InvalidInputError) as e:
        VolumeSpec.from_dict(dict(spec.to_dict(), version=4))
    assert e.value.fix == "upgrade edgemed-runtime"


@pytest.mark.parametrize("bad", [
    dict(axcodes="RAX"), dict(axcodes="RRS"), dict(axcodes="RA"), dict(spacing=(1, 0, 1)),
    dict(spacing=(1, 1)), dict(spacing=(1, float("nan"), 1)), dict(intensity=(0, 0, 0, 1)),
    dict(intensity=(0, 1, 1, 0)), dict(size=(0, 4, 4)), dict(size=(4.5, 4, 4)), dict(channels=0),
    dict(channels=True), dict(dtype="int8"), dict(interpolation="cubic"), dict(clip="yes"),
    dict(version=2), dict(pad_value=float("inf")), dict(pad_value=True), dict(size=("4", 4, 4)),
    dict(spacing=1.0),
])
def test_invalid_specs_are_refused(bad):
    with pytest.raises(InvalidInputError) as e:
        VolumeSpec(**bad)
    assert e.value.code == "bad-volume-spec"


def test_bad_input_raises_typed_errors():
    spec = SPECS["full"]
    volume = _volume("axial", shape=(6, 8, 10))
    _, place = spec.apply(volume)
    cases = [
        (lambda: spec.apply(np.zeros((4, 4, 4))), "bad-volume"),
        (lambda: spec.apply(volume.evolve(array=np.full((6, 8, 10), np.nan, np.float32))), "bad-volume"),
        (lambda: spec.apply_labels(np.zeros((6, 8, 10), np.float32), affine=volume.affine), "bad-labels"),
        (lambda: spec.apply_labels(np.zeros((6, 8, 10), np.int8)), "bad-labels"),
        (lambda: spec.apply_labels(np.zeros((6, 8, 10), np.int8), affine=np.zeros((4, 4))), "bad-volume"),
        (lambda: spec.plan((6, 8), volume.affine), "bad-volume"),
        (lambda: spec.invert(np.zeros((1, 3, 3, 3)), place), "bad-placement"),
        (lambda: spec.invert(np.zeros((1, *place.shape)), place, mode="cubic"), "bad-placement"),
        (lambda: Placement.from_dict(dict(place.to_dict(), version=2)), "bad-placement"),
        (lambda: Placement.from_dict(dict(place.to_dict(), affine=[[1, 0], [0, 1]])), "bad-placement"),
        (lambda: Placement.from_dict({k: v for k, v in place.to_dict().items() if k != "offset"}), "bad-placement"),
    ]
    for call, code in cases:
        with pytest.raises(InvalidInputError) as e:
            call()
        assert e.value.code == code


def _golden_case() -> tuple[VolumeSpec, Volume]:
    """A fixed small oblique volume (integer-valued, no RNG) and a spec using every step."""
    k, j, i = np.meshgrid(np.arange(5), np.arange(6), np.arange(7), indexing="ij")
    arr = ((k * 37 + j * 11 + i * 5) % 23 * 10 - 100).astype(np.float32)
    volume = Volume(array=arr, affine=_affine(CORONAL_FLIPPED, (2.0, 1.1, 0.9), (3.0, -4.0, 5.0)))
    spec = VolumeSpec(axcodes="RAS", spacing=(1.5, 1.2, 2.0), intensity=(-100, 100, -1, 1),
                      size=(6, 6, 6), channels=2)
    return spec, volume


def test_golden_output_and_inverse():
    spec, volume = _golden_case()
    out, place = spec.apply(volume)
    back = spec.invert(out[:1], place)
    if os.environ.get("EDGEMED_REGEN_GOLDEN") == "1":  # how the golden file was made
        GOLDEN.parent.mkdir(exist_ok=True)
        np.savez(GOLDEN, model=out, inverse=back)
    golden = np.load(GOLDEN)
    assert golden["model"].shape == out.shape == (2, 6, 6, 6) and golden["inverse"].shape == (1, 5, 6, 7)
    np.testing.assert_allclose(out, golden["model"], atol=1e-6, rtol=0)
    np.testing.assert_allclose(back, golden["inverse"], atol=1e-6, rtol=0)
    # coronal, flipped: i runs to R, k to P (flipped to A), j to I (flipped to S)
    assert place.transpose == (2, 0, 1) and place.flips == (True, True, False)
    assert place.oriented_shape == (7, 5, 6) and place.resampled_shape == (5, 8, 4)
    assert place.offset == (0, 1, -1)


def test_device_side_without_torch_monai_or_scipy(tmp_path):
    """The same arrays in a fresh interpreter where torch, monai, scipy and nibabel cannot load."""
    from edgemed.release.device_check import BLOCKED, import_blocker

    spec, volume = _golden_case()
    out, place = spec.apply(volume)
    np.savez(tmp_path / "build.npz", array=volume.array, affine=volume.affine, out=out,
             back=spec.invert(out, place, mode="linear"))
    (tmp_path / "spec.json").write_text(json.dumps(spec.to_dict()))
    code = import_blocker(BLOCKED + ("scipy", "nibabel")) + textwrap.dedent("""
        import json
        import numpy as np
        from edgemed_runtime.specs import spec_from_dict
        from edgemed_runtime.volume import Volume
        spec = spec_from_dict(json.load(open(sys.argv[1] + "/spec.json")))
        b = np.load(sys.argv[1] + "/build.npz")
        out, place = spec.apply(Volume(array=b["array"], affine=b["affine"]))
        np.savez(sys.argv[1] + "/device.npz", out=out, back=spec.invert(out, place))
        print(sorted(m for m in ("torch", "monai", "scipy", "nibabel") if m in sys.modules))
    """)
    run = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip() == "[]"
    b, d = np.load(tmp_path / "build.npz"), np.load(tmp_path / "device.npz")
    for key in ("out", "back"):
        assert b[key].dtype == d[key].dtype and np.array_equal(b[key], d[key]), key
