"""Multi-label: an independent sigmoid per label; ``predict`` returns (N, labels)
probabilities, ``decisions`` the thresholded booleans."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .base import TaskSpec, activate
from .classification import Classification


class Multilabel(Classification):
    name = "multilabel"

    def decode(self, logits: np.ndarray, spec: TaskSpec, labels: Sequence[str]) -> np.ndarray:
        return activate(logits, spec, axis=-1)

    @staticmethod
    def decisions(probs: np.ndarray, spec: TaskSpec) -> np.ndarray:
        """(N, labels) booleans: probability >= the label's threshold."""
        return probs >= spec.threshold_array(probs.shape[-1])[None, :]
