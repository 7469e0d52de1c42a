"""Segmentation metrics (edgemed.segmentation.metrics): hand-made masks with known Dice / HD95 /
surface Dice, spacing-aware distances, agreement with MONAI called directly on the full volumes
(so the per-label crop changes nothing), the empty-mask rules, and the refusals."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from monai.metrics import compute_dice, compute_hausdorff_distance, compute_surface_dice
from scipy import ndimage

from edgemed.errors import InvalidInputError
from edgemed.segmentation import case_metrics, metric_settings
from edgemed.segmentation.metrics import grid_diagonal_mm

LABELS = ("organ", "lesion")
# MONAI called directly (as the reference) warns about an argument it passes itself
pytestmark = pytest.mark.filterwarnings("ignore:.*always_return_as_numpy:FutureWarning")


def _cube(shape: tuple[int, int, int], start: tuple[int, int, int], size: int) -> np.ndarray:
    m = np.zeros(shape, np.int64)
    m[tuple(slice(s, s + size) for s in start)] = 1
    return m


def _brute_hd95(a: np.ndarray, b: np.ndarray, spacing: tuple[float, ...]) -> float:
    """HD95 by definition: edge voxels (mask minus its erosion), all pairwise distances in mm,
    the larger of the two directed 95th percentiles."""
    ea = np.argwhere(a & ~ndimage.binary_erosion(a)) * np.asarray(spacing)
    eb = np.argwhere(b & ~ndimage.binary_erosion(b)) * np.asarray(spacing)
    d = np.sqrt(((ea[:, None, :] - eb[None, :, :]) ** 2).sum(-1))
    return float(max(np.percentile(d.min(1), 95), np.percentile(d.min(0), 95)))


def test_two_cubes_offset_by_three_slices_at_anisotropic_spacing() -> None:
    shape = (20, 12, 12)
    a, b = _cube(shape, (4, 3, 3), 6), _cube(shape, (7, 3, 3), 6)  # offset 3 voxels along z
    r = case_metrics(a, b, labels=("cube",), spacing=(2.0, 1.0, 1.0))["cube"]
    assert r["dice"] == pytest.approx(0.5)  # overlap 3 of 6 slices: 2 * 108 / (216 + 216)
    assert r["hd95_mm"] == pytest.approx(_brute_hd95(a == 1, b == 1, (2.0, 1.0, 1.0)), abs=1e-5)
    assert 0 < r["hd95_mm"] <= 6.0 + 1e-6  # never beyond the shift: 3 slices x 2 mm
    iso = case_metrics(a, b, labels=("cube",), spacing=(1.0, 1.0, 1.0))["cube"]
    assert iso["dice"] == pytest.approx(0.5)
    assert iso["hd95_mm"] == pytest.approx(_brute_hd95(a == 1, b == 1, (1.0, 1.0, 1.0)), abs=1e-5)
    assert iso["hd95_mm"] < r["hd95_mm"]


@pytest.mark.parametrize("spacing, axis, expected_mm", [
    ((2.0, 1.0, 1.0), 0, 6.0), ((1.0, 1.0, 1.0), 0, 3.0), ((0.5, 3.0, 3.0), 0, 1.5),
    ((2.0, 1.0, 1.5), 2, 4.5)])
def test_hd95_is_in_millimetres(spacing: tuple[float, ...], axis: int, expected_mm: float) -> None:
    """Two one-voxel-thick plates 3 voxels apart: every edge voxel is exactly 3 x spacing away."""
    a = np.zeros((12, 12, 12), np.int64)
    b = np.zeros_like(a)
    idx = [slice(2, 10)] * 3
    idx[axis] = slice(3, 4)
    a[tuple(idx)] = 1
    idx[axis] = slice(6, 7)
    b[tuple(idx)] = 1
    r = case_metrics(a, b, labels=("plate",), spacing=spacing, tolerance_mm=expected_mm - 0.5)
    assert r["plate"]["hd95_mm"] == pytest.approx(expected_mm, abs=1e-5)
    assert r["plate"]["dice"] == 0.0
    assert r["plate"]["surface_dice"] == 0.0  # every distance is beyond the tolerance
    wide = case_metrics(a, b, labels=("plate",), spacing=spacing, tolerance_mm=expected_mm + 0.5)
    assert wide["plate"]["surface_dice"] == pytest.approx(1.0)


def _two_label_case(seed: int, shape: tuple[int, int, int] = (18, 26, 26)
                    ) -> tuple[np.ndarray, np.ndarray]:
    """A truth with an organ (touching the volume's edge) and a lesion, and a perturbed pred."""
    rng = np.random.default_rng(seed)
    z, y, x = np.ogrid[: shape[0], : shape[1], : shape[2]]
    truth = np.zeros(shape, np.int64)
    c = rng.uniform([7, 9, 9], [11, 17, 17])
    truth[((z - c[0]) / 9) ** 2 + ((y - c[1]) / 9) ** 2 + ((x - c[2]) / 14) ** 2 < 1] = 1
    truth[((z - c[0]) / 3) ** 2 + ((y - c[1]) / 4) ** 2 + ((x - c[2] - 2) / 4) ** 2 < 1] = 2
    pred = truth.copy()
    flip = ndimage.binary_dilation(truth == 1) & (truth == 0) & (rng.random(shape) < 0.5)
    pred[flip] = 1
    pred[ndimage.binary_erosion(truth == 2, iterations=1) ^ (truth == 2)] = 1
    pred[tuple(rng.integers(0, s) for s in shape)] = 2  # a stray voxel: HD95 feels it, Dice less
    return pred, truth


@pytest.mark.parametrize("seed", [0, 1])
def test_agrees_with_monai_on_the_full_volume(seed: int) -> None:
    """MONAI called directly on the whole one-hot volume: the per-label crop changes nothing."""
    pred, truth = _two_label_case(seed)
    spacing = (2.5, 0.8, 1.2)
    ours = case_metrics(pred, truth, labels=LABELS, spacing=spacing, tolerance_mm=1.5)
    eye = np.eye(3, dtype=np.float32)
    yp = torch.from_numpy(eye[pred].transpose(3, 0, 1, 2)[None].copy())
    yt = torch.from_numpy(eye[truth].transpose(3, 0, 1, 2)[None].copy())
    dice = compute_dice(yp, yt, include_background=False)[0]
    hd = compute_hausdorff_distance(yp, yt, percentile=95, spacing=list(spacing))[0]
    sd = compute_surface_dice(yp, yt, [1.5, 1.5], spacing=list(spacing))[0]
    for k, name in enumerate(LABELS):
        assert ours[name]["empty"] is None
        assert ours[name]["dice"] == pytest.approx(float(dice[k]), rel=1e-6)
        assert ours[name]["hd95_mm"] == pytest.approx(float(hd[k]), rel=1e-6)
        assert ours[name]["surface_dice"] == pytest.approx(float(sd[k]), rel=1e-6)
    assert 0 < ours["organ"]["dice"] < 1 and ours["lesion"]["hd95_mm"] > 0


def test_empty_masks_follow_the_rules_without_a_warning_or_nan() -> None:
    """The empty ground-truth mask of issue 16: a defined result, no MONAI warning, no NaN."""
    shape = (10, 14, 16)
    truth = _cube(shape, (2, 2, 2), 5)  # only the organ; the lesion is absent
    pred_none = truth.copy()            # lesion absent in both
    pred_fp = truth.copy()
    pred_fp[8, 10, 12] = 2              # lesion predicted where the truth has none
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        both = case_metrics(pred_none, truth, labels=LABELS, spacing=(3.0, 1.0, 1.0))
        one = case_metrics(pred_fp, truth, labels=LABELS, spacing=(3.0, 1.0, 1.0))
        missed = case_metrics(np.zeros(shape, np.int64), truth, labels=LABELS,
                              spacing=(3.0, 1.0, 1.0))
    assert not caught, [str(w.message) for w in caught]
    assert both["lesion"] == {"dice": 1.0, "hd95_mm": 0.0, "surface_dice": 1.0,
                              "empty": "both-empty", "empty_in": "both"}
    diag = float(np.sqrt((9 * 3.0) ** 2 + 13.0 ** 2 + 15.0 ** 2))
    assert grid_diagonal_mm(shape, (3.0, 1.0, 1.0)) == pytest.approx(diag)
    assert one["lesion"] == {"dice": 0.0, "hd95_mm": pytest.approx(diag), "surface_dice": 0.0,
                             "empty": "one-empty", "empty_in": "truth"}
    assert missed["organ"]["empty_in"] == "prediction" and missed["organ"]["dice"] == 0.0
    assert both["organ"]["dice"] == 1.0 and both["organ"]["empty"] is None
    json.dumps([both, one, missed], allow_nan=False)
    # what the rule replaces: MONAI alone returns a non-finite HD (and warns) here
    eye = np.eye(3, dtype=np.float32)
    with pytest.warns(UserWarning):
        raw = compute_hausdorff_distance(torch.from_numpy(eye[pred_fp].transpose(3, 0, 1, 2)[None]),
                                         torch.from_numpy(eye[truth].transpose(3, 0, 1, 2)[None]),
                                         percentile=95)
    assert not torch.isfinite(raw[0, 1])


def test_metric_settings_record_the_implementation() -> None:
    import monai

    s = metric_settings(1.5)
    assert s["implementation"] == "monai.metrics" and s["monai_version"] == monai.__version__
    assert s["tolerance_mm"] == 1.5 and "percentile=95" in s["hd95_mm"]
    assert set(s["empty_masks"]) == {"both-empty", "one-empty"}
    json.dumps(s, allow_nan=False)


@pytest.mark.parametrize("pred_value, dtype", [(3, np.int64), (-1, np.int64), (1.5, np.float32)])
def test_labels_outside_the_list_are_refused(pred_value: float, dtype: type) -> None:
    truth = _cube((6, 6, 6), (1, 1, 1), 3)
    pred = truth.astype(dtype)
    pred[0, 0, 0] = pred_value
    with pytest.raises(InvalidInputError) as e:
        case_metrics(pred, truth, labels=LABELS, spacing=(1, 1, 1))
    assert e.value.code == "bad-labels"
    assert "predicted" in e.value.message


def test_label_names_must_be_distinct() -> None:
    m = _cube((6, 6, 6), (1, 1, 1), 3)
    for labels in [(), ("a", "a"), ("a", "")]:
        with pytest.raises(InvalidInputError) as e:
            case_metrics(m, m, labels=labels, spacing=(1, 1, 1))
        assert e.value.code == "bad-labels"


def test_grids_that_differ_are_refused() -> None:
    with pytest.raises(InvalidInputError) as e:
        case_metrics(np.zeros((8, 8, 8), np.int64), np.zeros((8, 8, 9), np.int64),
                     labels=LABELS, spacing=(1, 1, 1))
    assert e.value.code == "mask-grid"
    assert "(8, 8, 9)" in e.value.expected and "(8, 8, 8)" in e.value.found
    with pytest.raises(InvalidInputError) as e:
        case_metrics(np.zeros((8,), np.int64), np.zeros((8,), np.int64), labels=LABELS,
                     spacing=(1,))
    assert e.value.code == "shape"


@pytest.mark.parametrize("spacing", [(1.0, 1.0), (1.0, 0.0, 1.0), (1.0, float("nan"), 1.0),
                                     ("a", 1, 1)])
def test_bad_spacing_is_refused(spacing: tuple) -> None:
    m = _cube((6, 6, 6), (1, 1, 1), 3)
    with pytest.raises(InvalidInputError) as e:
        case_metrics(m, m, labels=("a",), spacing=spacing)
    assert e.value.code == "bad-spacing"


def test_tolerance_must_be_positive() -> None:
    m = _cube((6, 6, 6), (1, 1, 1), 3)
    with pytest.raises(InvalidInputError) as e:
        case_metrics(m, m, labels=("a",), spacing=(1, 1, 1), tolerance_mm=0.0)
    assert e.value.code == "bad-option"


def test_torch_thread_count_is_restored() -> None:
    before = torch.get_num_threads()
    pred, truth = _two_label_case(3)
    case_metrics(pred, truth, labels=LABELS, spacing=(1, 1, 1))
    assert torch.get_num_threads() == before
