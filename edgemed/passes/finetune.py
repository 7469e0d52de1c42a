"""finetune: recovery fine-tuning of a compressed torch model (see edgemed.recovery).

Needs ``extras['train']`` (and optionally ``extras['val']``); distils from ``extras['teacher']``
(by default the model the first compression pass received, i.e. the FP32 original). With
``checkpoint_dir`` set, checkpoints and hyperparameters are written there so a build resumes.
"""

from __future__ import annotations

from pathlib import Path

from edgemed_runtime import Artifact

from ..recovery import FinetuneConfig
from .base import BuildContext, Pass, PassOutput


class FinetuneStepConfig(FinetuneConfig):
    checkpoint_dir: str | None = None
    use_teacher: bool = True


class Finetune(Pass[FinetuneStepConfig]):
    """torch -> torch, fine-tuned on the training data (best validation epoch kept)."""

    name = "finetune"
    Config = FinetuneStepConfig
    accepts = ("torch",)
    produces = "torch"

    def tool_versions(self) -> dict[str, str]:
        import torch

        return {"torch": torch.__version__}

    def run(self, artifact: Artifact, workdir: Path, ctx: BuildContext) -> PassOutput:
        from ..recovery import finetune
        from .torch_common import copy_module, train_arrays, val_arrays

        cfg = self.config
        model = copy_module(artifact, self.name)
        train, val = val_arrays(ctx, train_arrays(ctx, self.name), seed=ctx.seed)
        teacher = ctx.extras.get("teacher") if cfg.use_teacher else None
        base = FinetuneConfig(**cfg.model_dump(exclude={"checkpoint_dir", "use_teacher"}))
        res = finetune(model, train, val, base, teacher=teacher,
                       checkpoint_dir=cfg.checkpoint_dir,
                       on_epoch=lambda e, row: ctx.progress(
                           f"{self.name}: epoch {e + 1} {row['phase']} loss {row['loss']:.4f} "
                           f"val {cfg.metric} {row[f'val_{cfg.metric}']:.4f}"))
        record = {**res.to_dict(), "distilled": teacher is not None}
        return artifact.evolve(payload=model), record
