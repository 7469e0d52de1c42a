"""The build side of each task: what the gate feeds the models and how it decides.

``evaluator(task, ...)`` returns the task's ``Evaluator``: ``outputs(artifact, backend,
options)`` runs a model over the gate data, ``verdict(ref, cand)`` compares a candidate's
outputs with the FP32 reference's. Classification and multilabel gate logits
(``edgemed.evaluate``); segmentation gates label volumes per case on the original voxel grid
(``edgemed.segmentation``). Adding a task is one module here plus one line below.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from edgemed_runtime import Artifact


class Evaluator(Protocol):
    """What the build needs from a task to gate a candidate."""

    labelled: bool
    inputs: np.ndarray | None  # model-ready inputs for the crash probe and the timing

    def outputs(self, art: Artifact, backend: str, options: dict[str, Any]) -> Any:
        """The model's outputs over the gate data (what ``verdict`` compares)."""

    def verdict(self, ref: Any, cand: Any) -> Any:
        """The gate result (``passed``, ``reasons``, ``warnings``, ``to_dict()``...)."""


def evaluator(task: str, **kwargs: Any) -> Evaluator:
    """The evaluator of ``task`` (``classification``, ``multilabel``, ``segmentation``)."""
    if task == "segmentation":
        from .segmentation import SegmentationEvaluator

        return SegmentationEvaluator(**kwargs)
    from .classification import ClassificationEvaluator

    return ClassificationEvaluator(**kwargs)


__all__ = ["Evaluator", "evaluator"]
