"""Helpers shared by the torch-side compression passes (prune, cluster, fine-tune, QAT).

Torch passes accept and produce format ``torch``: the Artifact's ``payload`` is the nn.Module.
A pass never mutates its input module (the build memoises shared chain prefixes), so it works
on a deep copy. What the passes need besides the model comes from ``BuildContext.extras``:

    "train":   (x, y) arrays for recovery fine-tuning / QAT / Taylor importance
    "val":     (x, y) arrays for early stopping (default: a split of "train")
    "teacher": the FP32 nn.Module to distil from (default: the model the first torch pass saw)
"""

from __future__ import annotations

import copy
import zlib
from typing import Any

import numpy as np

from edgemed_runtime import Artifact

from .._torch import as_xy, prunable_layers, recalibrate_bn
from ..errors import InvalidInputError
from .base import BuildContext

TEACHER_KEY = "teacher"


def copy_module(artifact: Artifact, pass_name: str) -> Any:
    """A deep copy of the artifact's nn.Module (eval mode). Raises InvalidInputError otherwise."""
    import torch

    module = artifact.payload
    if artifact.format != "torch" or not isinstance(module, torch.nn.Module):
        raise InvalidInputError(
            f"{pass_name} needs a PyTorch model", expected="format 'torch' with an nn.Module",
            found=f"format {artifact.format!r}",
            fix=f"put {pass_name} before export_onnx in the pass chain, and build from a "
            "PyTorch model (not an ONNX file)", code="needs-torch")
    return copy.deepcopy(module).eval()


def remember_teacher(ctx: BuildContext, module: Any) -> None:
    """Keep a frozen copy of the uncompressed model for distillation (first torch pass only)."""
    if ctx.extras.get(TEACHER_KEY) is None:
        ctx.extras[TEACHER_KEY] = copy.deepcopy(module).eval()


def train_arrays(ctx: BuildContext, pass_name: str) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) from ``ctx.extras['train']``; InvalidInputError if missing or malformed."""
    data = ctx.extras.get("train")
    if data is None:
        raise InvalidInputError(
            f"{pass_name} needs training data", expected="BuildOptions(extras={'train': (x, y)})",
            found="no 'train' entry", fix="pass the training arrays (N, C, H, W) float32 and "
            "integer labels through BuildOptions.extras['train']", code="needs-train-data")
    return as_xy(data, "train")


def val_arrays(ctx: BuildContext, train: tuple[np.ndarray, np.ndarray], fraction: float = 0.2,
               seed: int = 0) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """(train, val): ``ctx.extras['val']`` if given, else a seeded stratified split of train."""
    if ctx.extras.get("val") is not None:
        return train, as_xy(ctx.extras["val"], "val")
    x, y = train
    rng = np.random.default_rng(seed)
    val_idx = []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        val_idx.extend(idx[: max(1, int(round(len(idx) * fraction)))])
    mask = np.zeros(len(y), bool)
    mask[val_idx] = True
    return (x[~mask], y[~mask]), (x[mask], y[mask])


def first_and_last(model: Any) -> tuple[str | None, str | None]:
    """Names of the first conv layer and the last Linear layer (the classifier), if any."""
    import torch

    first = next((n for n, m in model.named_modules()
                  if isinstance(m, (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d))), None)
    last = None
    for n, m in model.named_modules():
        if isinstance(m, torch.nn.Linear):
            last = n
    return first, last


def weight_sparsity(model: Any) -> dict[str, float]:
    """Fraction of exactly-zero weights per Conv/Linear layer, and ``"total"``."""
    zeros = total = 0
    out: dict[str, float] = {}
    for name, m in prunable_layers(model):
        w = m.weight.detach()
        z, t = int((w == 0).sum()), w.numel()
        out[name] = z / t
        zeros, total = zeros + z, total + t
    out["total"] = zeros / max(total, 1)
    return out


def compressed_size(data: bytes, level: int = 9) -> int:
    """Bytes after zlib at ``level`` (what a compressing bundle would store)."""
    return len(zlib.compress(data, level))


def state_bytes(model: Any) -> bytes:
    """The float32 weights of ``model`` concatenated (a size proxy independent of pickling)."""
    return b"".join(t.detach().cpu().float().numpy().tobytes()
                    for t in model.state_dict().values() if t.is_floating_point())


def recalibrate_from_context(model: Any, ctx: BuildContext) -> bool:
    """Recompute BatchNorm statistics on the calibration inputs (label-free); False if none."""
    if ctx.calibration is None or len(ctx.calibration) == 0:
        return False
    return recalibrate_bn(model, ctx.calibration.astype(np.float32))
