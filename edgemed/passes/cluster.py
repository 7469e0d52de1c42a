"""cluster_weights: weight sharing by k-means clustering per layer (palettization).

Each Conv/Linear weight tensor is replaced by ``k`` shared values (scikit-learn KMeans on the
layer's non-zero weights; exact zeros stay zero, so pruned sparsity survives). ``k`` is chosen per
layer: the smallest power of two in [min_clusters, max_clusters] whose relative reconstruction
error ||W - W_k|| / ||W|| is <= ``tolerance`` (or ``clusters`` for all layers, or ``per_layer``
for named ones). The model keeps float weights (any runtime runs it); the payload shrinks when
stored compressed or palettized: the record gives the FP32 size, the palettized size
(``ceil(log2(k+1))`` bits a weight + the palette) and zlib sizes before and after.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field

from edgemed_runtime import Artifact

from .base import BuildContext, Pass, PassConfig, PassOutput


class ClusterConfig(PassConfig):
    max_clusters: int = Field(16, ge=2, le=256)
    min_clusters: int = Field(2, ge=2, le=256)
    tolerance: float = Field(0.1, gt=0, lt=1, description="max relative L2 error per layer")
    clusters: int | None = Field(None, ge=2, le=256, description="fixed k for every layer")
    per_layer: dict[str, int] = Field(default_factory=dict)
    keep: tuple[str, ...] = Field((), description="globs of module names left unclustered")
    min_weights: int = Field(256, ge=1, description="smaller layers are left as they are")
    fit_samples: int = Field(20000, ge=100, description="weights sampled to fit k-means")
    recalibrate_bn: bool = Field(True, description="recompute BatchNorm statistics on the "
                                 "calibration inputs after clustering (BN is not clustered)")


def _kmeans_1d(values: np.ndarray, k: int, fit_samples: int, seed: int) -> np.ndarray:
    """Sorted centroids of a 1-D k-means fit (scikit-learn, k-means++ init)."""
    from sklearn.cluster import KMeans

    rng = np.random.default_rng(seed)
    fit = values if len(values) <= fit_samples else rng.choice(values, fit_samples, replace=False)
    k = min(k, len(np.unique(fit)))
    km = KMeans(n_clusters=k, n_init=1, random_state=seed).fit(fit.reshape(-1, 1).astype(np.float64))
    return np.sort(km.cluster_centers_.ravel()).astype(np.float32)


def assign(values: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Each value replaced by its nearest centroid (centroids sorted ascending)."""
    mids = (centroids[1:] + centroids[:-1]) / 2
    return centroids[np.searchsorted(mids, values)]


def cluster_tensor(w: np.ndarray, cfg: ClusterConfig, seed: int, k_fixed: int | None = None
                   ) -> tuple[np.ndarray, int, float]:
    """(clustered weights, k, relative error) for one weight tensor; zeros stay zero."""
    flat = w.ravel().astype(np.float32)
    nz = flat != 0
    vals = flat[nz]
    norm = float(np.linalg.norm(flat)) or 1.0
    k_fixed = k_fixed or cfg.clusters
    candidates = ([k_fixed] if k_fixed else
                  [k for k in (2 ** i for i in range(1, 9))
                   if cfg.min_clusters <= k <= cfg.max_clusters] or [cfg.max_clusters])
    best = None
    for k in candidates:
        out = flat.copy()
        if len(vals):
            out[nz] = assign(vals, _kmeans_1d(vals, k, cfg.fit_samples, seed))
        err = float(np.linalg.norm(out - flat)) / norm
        best = (out.reshape(w.shape), k, err)
        if err <= cfg.tolerance:
            break
    return best  # type: ignore[return-value]


def cluster_model(model: Any, cfg: ClusterConfig, seed: int = 0) -> dict[str, Any]:
    """Cluster ``model``'s weights in place; return per-layer k, error and the sizes."""
    import fnmatch

    import torch

    from .._torch import prunable_layers
    from .torch_common import compressed_size, state_bytes

    before_z = compressed_size(state_bytes(model))
    layers: dict[str, Any] = {}
    fp32_bytes = palette_bits = 0
    for name, m in prunable_layers(model, cfg.keep):
        w = m.weight.detach().cpu().numpy()
        fp32_bytes += w.size * 4
        if w.size < cfg.min_weights:
            palette_bits += w.size * 32
            continue
        fixed = cfg.clusters
        for pat, k in cfg.per_layer.items():
            if fnmatch.fnmatch(name, pat):
                fixed = k
        new, k, err = cluster_tensor(w, cfg, seed, fixed)
        with torch.no_grad():
            m.weight.copy_(torch.from_numpy(new))
        distinct = int(len(np.unique(new)))
        palette_bits += w.size * max(1, math.ceil(math.log2(distinct))) + distinct * 32
        layers[name] = {"k": k, "distinct_values": distinct, "relative_error": round(err, 5)}
    after_z = compressed_size(state_bytes(model))
    return {"layers": layers, "weights_fp32_bytes": fp32_bytes,
            "weights_palettized_bytes": int(math.ceil(palette_bits / 8)),
            "state_zlib_bytes_before": before_z, "state_zlib_bytes_after": after_z,
            "zlib_ratio": round(after_z / max(before_z, 1), 4)}


class ClusterWeights(Pass[ClusterConfig]):
    """torch -> torch whose layers each hold at most ``k`` distinct weight values."""

    name = "cluster_weights"
    Config = ClusterConfig
    accepts = ("torch",)
    produces = "torch"

    def tool_versions(self) -> dict[str, str]:
        import sklearn

        return {"scikit-learn": sklearn.__version__}

    def run(self, artifact: Artifact, workdir: Path, ctx: BuildContext) -> PassOutput:
        from .torch_common import copy_module, recalibrate_from_context, remember_teacher

        cfg = self.config
        model = copy_module(artifact, self.name)
        remember_teacher(ctx, artifact.payload)
        ctx.progress(f"{self.name}: k-means per layer (k <= {cfg.clusters or cfg.max_clusters})")
        record = cluster_model(model, cfg, ctx.seed)
        if cfg.recalibrate_bn:
            record["bn_recalibrated"] = recalibrate_from_context(model, ctx)
        return artifact.evolve(payload=model), record
