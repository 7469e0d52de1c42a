"""Torch helpers shared by training, fine-tuning and the torch passes (the layer below all three).

Nothing here imports ``edgemed.train``, ``edgemed.recovery`` or ``edgemed.passes``: they import
this module, so imports only point down. torch is imported inside each function (``import
edgemed`` stays torch-free).
"""

from __future__ import annotations

import fnmatch
from typing import Any, Iterator

import numpy as np

from .errors import InvalidInputError


def as_xy(data: Any, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Validate an (x, y) pair: x (N, C, H, W) finite float32, y (N,) non-negative integers."""
    x, y = (data.x, data.y) if hasattr(data, "x") else data
    x = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
    y = np.asarray(y)
    if x.ndim < 3 or y.ndim != 1 or len(x) != len(y) or len(y) == 0:
        raise InvalidInputError(f"malformed {what} data", expected="x (N, C, H, W) and y (N,)",
                                found=f"x {x.shape}, y {y.shape}", code="shape-mismatch")
    if not np.issubdtype(y.dtype, np.integer) or y.min() < 0:
        raise InvalidInputError(f"{what} labels must be non-negative integers",
                                found=str(y.dtype), code="bad-labels")
    if not np.all(np.isfinite(x)):
        raise InvalidInputError(f"{what} inputs are not finite", found="NaN or inf")
    return x, y.astype(np.int64)


def match_modules(model: Any, patterns: tuple[str, ...] | list[str]) -> list[tuple[str, Any]]:
    """Named submodules whose qualified name matches any glob in ``patterns``."""
    return [(n, m) for n, m in model.named_modules() if n and any(fnmatch.fnmatch(n, p)
                                                                  for p in patterns)]


def prunable_layers(model: Any, keep: tuple[str, ...] = ()) -> list[tuple[str, Any]]:
    """Conv and Linear layers (name, module) not matching a ``keep`` glob."""
    import torch

    kinds = (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d, torch.nn.Linear)
    return [(n, m) for n, m in model.named_modules()
            if isinstance(m, kinds) and not any(fnmatch.fnmatch(n, p) for p in keep)]


def recalibrate_bn(model: Any, x: np.ndarray, batch_size: int = 32) -> bool:
    """Recompute BatchNorm running statistics on ``x`` (torch.optim.swa_utils.update_bn).

    Running averages lag behind weights that change fast (high learning rate, few epochs, or
    right after pruning), and eval-mode outputs can collapse to one class; a pass over the
    training inputs with cumulative averaging fixes that. Returns False if there is no BN.
    """
    import torch
    from torch.optim.swa_utils import update_bn

    if not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        return False
    xt = torch.from_numpy(np.ascontiguousarray(x))
    with torch.no_grad():
        update_bn([xt[i:i + batch_size] for i in range(0, len(xt), batch_size)], model)
    model.eval()
    return True


def minibatches(xt: Any, yt: Any, batch_size: int, rng: np.random.Generator,
                augment: bool) -> Iterator[tuple[Any, Any]]:
    """Shuffled (x, y) tensor batches of one epoch, each flipped left-right / up-down with
    probability 1/2 when ``augment``."""
    import torch

    order = rng.permutation(len(xt))
    for i in range(0, len(xt), batch_size):
        idx = torch.from_numpy(order[i:i + batch_size])
        xb, yb = xt[idx], yt[idx]
        if augment:
            if rng.random() < 0.5:
                xb = torch.flip(xb, dims=[-1])
            if rng.random() < 0.5:
                xb = torch.flip(xb, dims=[-2])
        yield xb, yb


def predict_logits(model: Any, x: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Evaluate ``model`` on ``x`` (N, C, H, W) in eval mode; return logits (N, K)."""
    import torch

    model.eval()
    outs = []
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            outs.append(model(torch.from_numpy(np.ascontiguousarray(x[i:i + batch_size]))).numpy())
    return np.concatenate(outs)
