"""Grad-CAM side by side: similar models agree, an unrelated model is flagged; PNG written."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from edgemed.errors import InvalidInputError
from edgemed.explain import compare_gradcam, gradcam, map_similarity


def test_identical_model_matches_and_png(task32, tmp_path):
    model = task32[0]
    x = task32[2][0][:3]
    rep = compare_gradcam(model, copy.deepcopy(model), x, png=tmp_path / "cam.png")
    assert rep.mean_correlation == pytest.approx(1.0, abs=1e-4) and not rep.flagged
    assert (tmp_path / "cam.png").read_bytes()[:4] == b"\x89PNG"
    assert rep.layers == ("3.3", "3.3")


def test_unrelated_model_is_flagged(task32):
    import torch

    from edgemed.search.demo import small_cnn

    torch.manual_seed(123)
    other = small_cnn(1, 2, width=8).eval()
    rep = compare_gradcam(task32[0], other, task32[2][0][:4], min_similarity=0.9)
    assert rep.flagged and rep.reasons and rep.mean_correlation < 0.9


def test_map_similarity_and_shapes(task32):
    a = np.zeros((8, 8), np.float32)
    a[:4] = 1
    assert map_similarity(a, a)["top_iou"] == 1.0
    assert map_similarity(a, 1 - a)["correlation"] == pytest.approx(-1.0)
    maps = gradcam(task32[0], task32[2][0][:2])
    assert maps.shape == (2, 32, 32) and maps.min() >= 0 and maps.max() <= 1
    with pytest.raises(InvalidInputError):
        gradcam(task32[0], task32[2][0][0])
    with pytest.raises(InvalidInputError):
        gradcam(task32[0], task32[2][0][:1], target_layer="nope")
