"""prune_unstructured: magnitude pruning of individual weights (torch.nn.utils.prune).

``scope="global"`` ranks every prunable weight together (one threshold across layers);
``scope="local"`` removes the same fraction from each layer. The target sparsity is reached over
``steps`` steps following ``schedule`` (``one-shot``, ``linear``, or ``cubic``: Zhu & Gupta's
polynomial schedule, which prunes fast early and gently late), with optional recovery fine-tuning
(``finetune_epochs`` per step, needs ``extras['train']``) between steps. The masks are made
permanent at the end, so the exported model simply holds zeros: latency does not change, the
compressed (zlib/zstd) size of the weights does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from edgemed_runtime import Artifact

from .base import BuildContext, Pass, PassConfig, PassOutput


class UnstructuredConfig(PassConfig):
    sparsity: float = Field(0.5, ge=0, lt=1, description="final fraction of zero weights")
    scope: Literal["global", "local"] = "global"
    schedule: Literal["one-shot", "linear", "cubic"] = "one-shot"
    steps: int = Field(1, ge=1, le=100)
    finetune_epochs: int = Field(0, ge=0, description="recovery epochs after each step")
    finetune_lr: float = Field(1e-4, gt=0)
    keep_first_conv: bool = True
    keep_classifier: bool = True
    keep: tuple[str, ...] = Field((), description="globs of module names never pruned")
    recalibrate_bn: bool = Field(True, description="recompute BatchNorm statistics on the "
                                 "calibration inputs after pruning")


def schedule_sparsities(final: float, steps: int, kind: str) -> list[float]:
    """Cumulative sparsity after each step (the last is ``final``)."""
    if kind == "one-shot" or steps == 1:
        return [final]
    if kind == "linear":
        return [final * (t / steps) for t in range(1, steps + 1)]
    return [final * (1 - (1 - t / steps) ** 3) for t in range(1, steps + 1)]


def keep_patterns(model: Any, keep: tuple[str, ...], first_conv: bool, classifier: bool
                  ) -> tuple[str, ...]:
    """``keep`` plus the names of the first conv / classifier when asked to keep them."""
    from .torch_common import first_and_last

    first, last = first_and_last(model)
    extra = ([first] if first_conv and first else []) + ([last] if classifier and last else [])
    return tuple(keep) + tuple(extra)


def magnitude_prune(model: Any, sparsity: float, *, scope: str = "global",
                    keep: tuple[str, ...] = ()) -> None:
    """Prune ``model`` in place to ``sparsity`` (cumulative, among its prunable weights).

    Already-zero weights count as pruned, so calling with growing sparsities follows a schedule.
    """
    from torch.nn.utils import prune

    from .._torch import prunable_layers

    layers = prunable_layers(model, keep)
    params = [(m, "weight") for _, m in layers]
    if not params or sparsity <= 0:
        return
    if scope == "global":
        prune.global_unstructured(params, pruning_method=prune.L1Unstructured, amount=sparsity)
    else:
        for m, name in params:
            prune.l1_unstructured(m, name, amount=sparsity)
    for m, name in params:
        prune.remove(m, name)


class PruneUnstructured(Pass[UnstructuredConfig]):
    """torch -> torch with a fraction of individual weights set to zero."""

    name = "prune_unstructured"
    Config = UnstructuredConfig
    accepts = ("torch",)
    produces = "torch"

    def tool_versions(self) -> dict[str, str]:
        import torch

        return {"torch": torch.__version__}

    def run(self, artifact: Artifact, workdir: Path, ctx: BuildContext) -> PassOutput:
        from ..recovery import FinetuneConfig, finetune
        from .torch_common import (copy_module, recalibrate_from_context, remember_teacher,
                                   train_arrays, val_arrays, weight_sparsity)

        cfg = self.config
        model = copy_module(artifact, self.name)
        remember_teacher(ctx, artifact.payload)
        keep = keep_patterns(model, cfg.keep, cfg.keep_first_conv, cfg.keep_classifier)
        data = None
        if cfg.finetune_epochs > 0:
            data = val_arrays(ctx, train_arrays(ctx, self.name), seed=ctx.seed)
        steps = schedule_sparsities(cfg.sparsity, cfg.steps, cfg.schedule)
        recovery = []
        for i, s in enumerate(steps):
            ctx.progress(f"{self.name}: step {i + 1}/{len(steps)} to {s:.1%} sparsity")
            magnitude_prune(model, s, scope=cfg.scope, keep=keep)
            if cfg.recalibrate_bn:
                recalibrate_from_context(model, ctx)
            if data is not None:
                res = finetune(model, data[0], data[1], FinetuneConfig(
                    epochs=cfg.finetune_epochs, full_lr=cfg.finetune_lr, seed=ctx.seed + i,
                    patience=max(1, cfg.finetune_epochs)), teacher=ctx.extras.get("teacher"))
                recovery.append(round(res.best_metric, 4))
        sp = weight_sparsity(model)
        record = {"schedule": [round(s, 4) for s in steps], "kept_layers": list(keep),
                  "sparsity_total": round(sp.pop("total"), 4),
                  "sparsity_per_layer": {k: round(v, 4) for k, v in sp.items()},
                  **({"recovery_val_accuracy": recovery} if recovery else {})}
        return artifact.evolve(payload=model), record
