"""Explainability: Grad-CAM of the FP32 and the compressed model side by side.

``compare_gradcam(reference, candidate, x)`` computes MONAI's ``GradCAM`` for both models on the
same images and the same class (the reference's prediction unless ``class_idx`` is given), and
scores how alike the heatmaps are per image: the Pearson correlation of the maps and the IoU of
their hottest ``top_fraction`` of pixels. A candidate whose mean correlation is below
``min_similarity`` (or any image below ``min_image_similarity``) "looks somewhere else" and is
flagged. ``save_side_by_side`` writes a PNG (image | FP32 map | compressed map per row).
Grad-CAM needs gradients, so the candidate is the torch-side compressed model (pruned,
clustered, QAT fake-quantised), before export to an INT8 graph.
"""

from __future__ import annotations

import copy
import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgemed_runtime.sdk import atomic_write_bytes

from .errors import InvalidInputError


def default_target_layer(model: Any) -> str:
    """Name of the last convolution of ``model`` (where Grad-CAM is usually taken)."""
    import torch

    convs = [n for n, m in model.named_modules()
             if isinstance(m, (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d))]
    if not convs:
        raise InvalidInputError("Grad-CAM needs a convolutional model", expected="a Conv layer",
                                found="none", code="no-conv")
    return convs[-1]


def gradcam(model: Any, x: np.ndarray, *, target_layer: str | None = None,
            class_idx: np.ndarray | None = None) -> np.ndarray:
    """Grad-CAM maps (N, H, W) in [0, 1] for ``x`` (N, C, H, W); MONAI's implementation.

    Args:
        class_idx: the class per image (None: the model's own prediction).
    Raises:
        InvalidInputError: unknown layer or malformed input.
    """
    import torch
    from monai.visualize import GradCAM

    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 4:
        raise InvalidInputError("Grad-CAM input must be (N, C, H, W)", found=str(x.shape),
                                code="shape-mismatch")
    layer = target_layer or default_target_layer(model)
    if layer not in dict(model.named_modules()):
        raise InvalidInputError("unknown Grad-CAM layer", expected="a module name such as "
                                f"{default_target_layer(model)!r}", found=layer)
    # MONAI's hooks stay registered on the module (and turn in-place ReLUs off): use a copy
    model = copy.deepcopy(model).eval()
    cam = GradCAM(nn_module=model, target_layers=layer)
    maps = []
    for i in range(len(x)):
        xi = torch.from_numpy(x[i:i + 1]).requires_grad_(False)
        c = None if class_idx is None else int(class_idx[i])
        m = cam(xi, class_idx=c)
        maps.append(m.detach().numpy()[0, 0])
    out = np.stack(maps).astype(np.float32)
    return np.nan_to_num(out, nan=0.0)


def map_similarity(a: np.ndarray, b: np.ndarray, top_fraction: float = 0.2) -> dict[str, float]:
    """Pearson correlation and IoU of the hottest ``top_fraction`` pixels of two heatmaps."""
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    if a.std() < 1e-12 or b.std() < 1e-12:
        corr = 1.0 if np.allclose(a, b) else 0.0
    else:
        corr = float(np.corrcoef(a, b)[0, 1])
    k = max(1, int(round(len(a) * top_fraction)))
    ta = set(np.argsort(a)[-k:].tolist())
    tb = set(np.argsort(b)[-k:].tolist())
    return {"correlation": corr, "top_iou": len(ta & tb) / len(ta | tb)}


@dataclass
class ExplainReport:
    """Similarity of the compressed model's Grad-CAM to the FP32 model's, per image and overall."""

    per_image: list[dict[str, float]]
    mean_correlation: float
    mean_top_iou: float
    flagged: bool
    reasons: list[str] = field(default_factory=list)
    layers: tuple[str, str] = ("", "")
    png: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"per_image": self.per_image, "mean_correlation": self.mean_correlation,
                "mean_top_iou": self.mean_top_iou, "flagged": self.flagged,
                "reasons": self.reasons, "layers": list(self.layers), "png": self.png}


def compare_gradcam(reference: Any, candidate: Any, x: np.ndarray, *,
                    class_idx: np.ndarray | None = None, reference_layer: str | None = None,
                    candidate_layer: str | None = None, min_similarity: float = 0.5,
                    min_image_similarity: float = 0.0, top_fraction: float = 0.2,
                    png: str | os.PathLike[str] | None = None) -> ExplainReport:
    """Grad-CAM of both models on ``x``; flag the candidate if it looks somewhere else.

    Returns:
        ExplainReport (and writes the side-by-side PNG when ``png`` is given).
    Raises:
        InvalidInputError: malformed input or unknown layers.
    """
    from ._torch import predict_logits

    x = np.asarray(x, dtype=np.float32)
    if class_idx is None:
        class_idx = predict_logits(reference, x).argmax(1)
    lr = reference_layer or default_target_layer(reference)
    lc = candidate_layer or default_target_layer(candidate)
    ref_maps = gradcam(reference, x, target_layer=lr, class_idx=class_idx)
    cand_maps = gradcam(candidate, x, target_layer=lc, class_idx=class_idx)
    per = [map_similarity(a, b, top_fraction) for a, b in zip(ref_maps, cand_maps)]
    mean_corr = float(np.mean([p["correlation"] for p in per]))
    mean_iou = float(np.mean([p["top_iou"] for p in per]))
    reasons = []
    if mean_corr < min_similarity:
        reasons.append(f"mean Grad-CAM correlation {mean_corr:.3f} < {min_similarity}")
    low = [i for i, p in enumerate(per) if p["correlation"] < min_image_similarity]
    if low:
        reasons.append(f"{len(low)} image(s) with correlation < {min_image_similarity}: {low[:10]}")
    report = ExplainReport(per_image=per, mean_correlation=mean_corr, mean_top_iou=mean_iou,
                           flagged=bool(reasons), reasons=reasons, layers=(lr, lc))
    if png is not None:
        save_side_by_side(x, ref_maps, cand_maps, png, similarities=per)
        report.png = str(png)
    return report


def save_side_by_side(x: np.ndarray, ref_maps: np.ndarray, cand_maps: np.ndarray,
                      path: str | os.PathLike[str], *, similarities: list[dict[str, float]] | None
                      = None, titles: tuple[str, str] = ("FP32", "compressed")) -> Path:
    """PNG with one row per image: the image, FP32 Grad-CAM, compressed Grad-CAM (atomic write)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(x)
    fig, axes = plt.subplots(n, 3, figsize=(7.5, 2.5 * n), dpi=100, squeeze=False)
    for i in range(n):
        img = x[i, 0]
        axes[i, 0].imshow(img, cmap="gray")
        axes[i, 0].set_title("input", fontsize=8)
        for j, (maps, name) in enumerate(((ref_maps, titles[0]), (cand_maps, titles[1])), start=1):
            axes[i, j].imshow(img, cmap="gray")
            axes[i, j].imshow(maps[i], cmap="jet", alpha=0.45, vmin=0, vmax=1)
            label = name
            if j == 2 and similarities:
                label += f" (r={similarities[i]['correlation']:.2f})"
            axes[i, j].set_title(label, fontsize=8)
        for ax in axes[i]:
            ax.axis("off")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    out = Path(path)
    atomic_write_bytes(out, buf.getvalue())
    return out
