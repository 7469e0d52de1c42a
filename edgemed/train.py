"""Training a classifier on in-memory arrays (used by the demo and by recovery fine-tuning).

Deterministic for a seed: torch and numpy generators are seeded and data order is drawn from a
seeded generator. Returns the per-epoch history; the model is trained in place.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from ._torch import minibatches, predict_logits, recalibrate_bn


@dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters of ``train_classifier``."""

    epochs: int = 5
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    seed: int = 0
    augment: bool = True
    recalibrate_bn: bool = False  # recompute BatchNorm statistics at the end (see finetune)


@dataclass
class TrainHistory:
    """Loss and accuracy per epoch (validation accuracy when a validation set was given)."""

    loss: list[float] = field(default_factory=list)
    train_accuracy: list[float] = field(default_factory=list)
    val_accuracy: list[float] = field(default_factory=list)


def train_classifier(
    model: Any,
    x: np.ndarray,
    y: np.ndarray,
    config: TrainConfig = TrainConfig(),
    *,
    val: tuple[np.ndarray, np.ndarray] | None = None,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
) -> TrainHistory:
    """Train ``model`` with AdamW + cross-entropy (cosine LR), flips as augmentation.

    Args:
        model: a torch nn.Module producing (N, K) logits.
        x, y: inputs (N, C, H, W) float32 and integer labels (N,).
        val: optional (x, y) evaluated after every epoch.
        on_epoch: callback ``(epoch, {"loss":..., "train_accuracy":..., "val_accuracy":...})``.
    """
    import torch

    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps = config.epochs * max(1, int(np.ceil(len(x) / config.batch_size)))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config.lr, total_steps=steps,
                                                pct_start=0.2)
    loss_fn = torch.nn.CrossEntropyLoss()
    hist = TrainHistory()
    xt, yt = torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(y.astype(np.int64))
    for epoch in range(config.epochs):
        model.train()
        total, correct, loss_sum = 0, 0, 0.0
        for xb, yb in minibatches(xt, yt, config.batch_size, rng, config.augment):
            opt.zero_grad()
            logits = model(xb)
            loss = loss_fn(logits, yb)
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += float(loss.detach()) * len(yb)
            correct += int((logits.argmax(1) == yb).sum())
            total += len(yb)
        row = {"loss": loss_sum / total, "train_accuracy": correct / total}
        hist.loss.append(row["loss"])
        hist.train_accuracy.append(row["train_accuracy"])
        if val is not None:
            acc = float((predict_logits(model, val[0]).argmax(1) == val[1]).mean())
            hist.val_accuracy.append(acc)
            row["val_accuracy"] = acc
        if on_epoch is not None:
            on_epoch(epoch, row)
    if config.recalibrate_bn:
        recalibrate_bn(model, x, config.batch_size)
    model.eval()
    return hist
