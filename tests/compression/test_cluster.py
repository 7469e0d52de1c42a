"""Weight sharing: k-means per layer, k chosen per layer, zeros preserved, sizes reported."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgemed.passes.base import get_pass_class
from edgemed.passes.cluster import ClusterConfig, cluster_tensor


def test_cluster_tensor_picks_smallest_k_within_tolerance():
    rng = np.random.default_rng(0)
    three = rng.choice([-1.0, 0.5, 2.0], size=4096).astype(np.float32)
    out, k, err = cluster_tensor(three, ClusterConfig(tolerance=0.01), seed=0)
    assert k == 4 and err < 1e-6 and len(np.unique(out)) == 3
    gauss = rng.standard_normal(4096).astype(np.float32)
    _, k_loose, e1 = cluster_tensor(gauss, ClusterConfig(tolerance=0.3), seed=0)
    _, k_tight, e2 = cluster_tensor(gauss, ClusterConfig(tolerance=0.05, max_clusters=64), seed=0)
    assert k_loose < k_tight and e1 <= 0.3 and e2 <= 0.05


def test_zeros_stay_zero():
    rng = np.random.default_rng(1)
    w = rng.standard_normal(2048).astype(np.float32)
    w[rng.random(2048) < 0.5] = 0
    out, _, _ = cluster_tensor(w, ClusterConfig(clusters=4), seed=0)
    assert np.array_equal(out == 0, w == 0)
    assert len(np.unique(out[out != 0])) <= 4


def test_cluster_pass_sizes_and_accuracy(torch_artifact, ctx, tmp_path, task32):
    from tests.helpers.compress_helpers import accuracy

    out = get_pass_class("cluster_weights")({"clusters": 32})(torch_artifact, tmp_path, ctx)
    rec = out.provenance[-1]
    for name, m in out.payload.named_modules():
        if name in rec["layers"]:
            assert len(torch.unique(m.weight)) <= 32
    assert rec["weights_palettized_bytes"] < 0.25 * rec["weights_fp32_bytes"]
    assert rec["state_zlib_bytes_after"] < 0.5 * rec["state_zlib_bytes_before"]
    assert abs(accuracy(out.payload, task32[2]) - accuracy(task32[0], task32[2])) <= 0.05


def test_per_layer_override(torch_artifact, ctx, tmp_path):
    out = get_pass_class("cluster_weights")({"per_layer": {"3.*": 2}, "tolerance": 0.05,
                                             "max_clusters": 32})(torch_artifact, tmp_path, ctx)
    layers = out.provenance[-1]["layers"]
    assert layers["3.0"]["k"] == 2 and layers["3.3"]["k"] == 2
    assert layers["1.0"]["k"] > 2
