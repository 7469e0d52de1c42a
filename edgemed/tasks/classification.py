"""Classification (and multilabel) gate: logits over the validation arrays, ``run_gate``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from edgemed_runtime import Artifact, open_artifact

from ..evaluate import GateConfig, GateResult, run_gate


def batched_logits(art: Artifact, backend: str, options: dict[str, Any], x: np.ndarray,
                   batch: int) -> np.ndarray:
    """The first output of ``art`` over ``x`` in batches (fixed-batch models: their batch)."""
    if not art.io.dynamic_batch:
        batch = art.io.input_shape[0]  # fixed-shape models (e.g. mobile) take exactly that batch
    with open_artifact(art, backend=backend, options=options) as sess:
        return np.concatenate([sess.run({art.io.input_name: x[i:i + batch]})[art.io.output_names[0]]
                               for i in range(0, len(x), batch)])


@dataclass
class ClassificationEvaluator:
    """Gate on logits of ``x`` (labels ``y``, or agreement only)."""

    x: np.ndarray | None
    y: np.ndarray | None
    cfg: GateConfig
    batch: int = 16

    @property
    def labelled(self) -> bool:
        return self.y is not None

    @property
    def inputs(self) -> np.ndarray | None:
        return self.x

    def outputs(self, art: Artifact, backend: str, options: dict[str, Any]) -> np.ndarray:
        assert self.x is not None
        return batched_logits(art, backend, options, self.x, self.batch)

    def verdict(self, ref: np.ndarray, cand: np.ndarray) -> GateResult:
        return run_gate(ref, cand, self.y, self.cfg)
