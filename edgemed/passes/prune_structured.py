"""prune_structured: remove whole channels/filters with torch-pruning's dependency graph.

torch-pruning traces the model, groups every layer coupled to a channel (convs, BatchNorms,
residual additions, DenseNet concatenations) and removes the lowest-importance groups, so the
exported graph is really smaller and faster. Importance: ``l1`` / ``l2`` (weight magnitude),
``bn_scale`` (|gamma| of the BatchNorm after a conv), ``taylor`` (|weight x gradient| on a batch
of training data, or of calibration inputs labelled by the model itself). The first conv and the
classifier are kept by default; ``keep`` adds globs of module names. ``steps`` > 1 prunes
iteratively, with ``finetune_epochs`` of recovery between steps when training data is given.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from edgemed_runtime import Artifact

from ..errors import ExportError, InvalidInputError
from .base import BuildContext, Pass, PassConfig, PassOutput


class StructuredConfig(PassConfig):
    ratio: float = Field(0.3, gt=0, lt=1, description="fraction of channels removed")
    importance: Literal["l1", "l2", "bn_scale", "taylor"] = "l1"
    global_pruning: bool = False
    max_layer_ratio: float = Field(0.9, gt=0, le=1)
    steps: int = Field(1, ge=1, le=50)
    round_to: int | None = Field(None, ge=1, description="keep channel counts multiples of this")
    keep_first_conv: bool = True
    keep_classifier: bool = True
    keep: tuple[str, ...] = Field((), description="globs of module names never pruned")
    finetune_epochs: int = Field(0, ge=0)
    finetune_lr: float = Field(1e-4, gt=0)
    taylor_samples: int = Field(64, ge=1)
    recalibrate_bn: bool = Field(True, description="recompute BatchNorm statistics on the "
                                 "calibration inputs after pruning")


def make_importance(kind: str) -> Any:
    """The torch-pruning importance object for ``kind``."""
    import torch_pruning as tp

    if kind == "l1":
        return tp.importance.GroupMagnitudeImportance(p=1)
    if kind == "l2":
        return tp.importance.GroupMagnitudeImportance(p=2)
    if kind == "bn_scale":
        return tp.importance.BNScaleImportance()
    return tp.importance.GroupTaylorImportance()


def count_macs(model: Any, example: Any) -> tuple[int, int]:
    """(MACs, parameters) of ``model`` on ``example`` (torch-pruning's counter)."""
    import torch_pruning as tp

    macs, params = tp.utils.count_ops_and_params(model, example)
    return int(macs), int(params)


def prune_channels(model: Any, example: Any, cfg: StructuredConfig, *,
                   data: tuple[np.ndarray, np.ndarray] | None = None,
                   between_steps: Any = None) -> dict[str, Any]:
    """Prune ``model`` in place; return MACs/params before and after and per-step figures.

    Args:
        example: an input tensor (1, C, H, W).
        data: (x, y) for Taylor importance (needed when ``cfg.importance == 'taylor'``).
        between_steps: ``callable(step)`` run after each step but the last (recovery).
    Raises:
        InvalidInputError: Taylor importance without data, or no prunable layer.
        ExportError: torch-pruning could not trace the model.
    """
    import torch
    import torch_pruning as tp

    from .prune_unstructured import keep_patterns
    from .._torch import match_modules

    keep = keep_patterns(model, cfg.keep, cfg.keep_first_conv, cfg.keep_classifier)
    ignored = [m for _, m in match_modules(model, keep)]
    if cfg.importance == "taylor" and data is None:
        raise InvalidInputError("Taylor importance needs data", expected="training or "
                                "calibration inputs", found="none", code="needs-train-data")
    before = count_macs(model, example)
    model.eval()
    try:
        pruner = tp.pruner.MetaPruner(
            model, example, importance=make_importance(cfg.importance),
            pruning_ratio=cfg.ratio, global_pruning=cfg.global_pruning,
            max_pruning_ratio=cfg.max_layer_ratio, iterative_steps=cfg.steps,
            ignored_layers=ignored, round_to=cfg.round_to)
    except Exception as exc:
        raise ExportError("torch-pruning could not trace the model's channel dependencies",
                          found=f"{type(exc).__name__}: {exc}"[:400],
                          fix="check that the model runs on the example input; keep the "
                          "layers it cannot handle with keep=[...]", code="prune-failed") from None
    steps = []
    for step in range(cfg.steps):
        if cfg.importance == "taylor":
            x, y = data  # type: ignore[misc]
            model.zero_grad()
            model.eval()
            loss = torch.nn.functional.cross_entropy(model(torch.from_numpy(x)),
                                                     torch.from_numpy(y))
            loss.backward()
        pruner.step()
        model.zero_grad()
        macs, params = count_macs(model, example)
        steps.append({"step": step + 1, "macs": macs, "params": params})
        if between_steps is not None and step + 1 < cfg.steps:
            between_steps(step)
    after = steps[-1]
    return {"macs_before": before[0], "params_before": before[1], "macs_after": after["macs"],
            "params_after": after["params"], "macs_ratio": round(after["macs"] / before[0], 4),
            "params_ratio": round(after["params"] / before[1], 4), "steps": steps,
            "kept_layers": list(keep)}


class PruneStructured(Pass[StructuredConfig]):
    """torch -> smaller torch model (channels removed)."""

    name = "prune_structured"
    Config = StructuredConfig
    accepts = ("torch",)
    produces = "torch"

    def tool_versions(self) -> dict[str, str]:
        import torch
        import torch_pruning as tp

        return {"torch": torch.__version__, "torch-pruning": tp.__version__}

    def run(self, artifact: Artifact, workdir: Path, ctx: BuildContext) -> PassOutput:
        import torch

        from .._torch import predict_logits
        from ..recovery import FinetuneConfig, finetune
        from .torch_common import (copy_module, recalibrate_from_context, remember_teacher,
                                   train_arrays, val_arrays)

        cfg = self.config
        model = copy_module(artifact, self.name)
        remember_teacher(ctx, artifact.payload)
        example = torch.zeros((1, *artifact.io.sample_shape), dtype=torch.float32)
        split = None
        if cfg.finetune_epochs > 0:
            split = val_arrays(ctx, train_arrays(ctx, self.name), seed=ctx.seed)
        data = None
        if cfg.importance == "taylor":
            if ctx.extras.get("train") is not None:
                x, y = train_arrays(ctx, self.name)
            elif ctx.calibration is not None:
                x = ctx.calibration.astype(np.float32)
                y = predict_logits(model, x).argmax(1)
            else:
                x = y = None
            if x is not None:
                rng = np.random.default_rng(ctx.seed)
                idx = rng.permutation(len(x))[: cfg.taylor_samples]
                data = (np.ascontiguousarray(x[idx]), np.asarray(y)[idx].astype(np.int64))

        def recover(step: int) -> None:
            if split is not None:
                finetune(model, split[0], split[1], FinetuneConfig(
                    epochs=cfg.finetune_epochs, full_lr=cfg.finetune_lr, seed=ctx.seed + step,
                    patience=max(1, cfg.finetune_epochs)), teacher=ctx.extras.get("teacher"))

        ctx.progress(f"{self.name}: removing {cfg.ratio:.0%} of channels ({cfg.importance})")
        with torch.no_grad():
            want = tuple(artifact.payload.eval()(example).shape)
        report = prune_channels(model, example, cfg, data=data, between_steps=recover)
        if cfg.recalibrate_bn:
            report["bn_recalibrated"] = recalibrate_from_context(model, ctx)
        with torch.no_grad():
            got = tuple(model(example).shape)
        if got != want:
            raise ExportError("pruning changed the model's output shape", code="prune-failed",
                              expected=str(want), found=str(got))
        return artifact.evolve(payload=model.eval()), report
