"""Classification: one softmax over classes; ``predict`` returns (N, classes) probabilities."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..errors import InvalidInputError
from .base import TaskSpec, activate


class Classification:
    name = "classification"
    spatial_output = False

    def check_output(self, shape: Sequence[int], input_shape: Sequence[int],
                     labels: Sequence[str]) -> int:
        if len(shape) != 2:
            raise InvalidInputError(
                "a classification model must output (batch, classes) logits",
                expected="a 2D output", found="x".join(map(str, shape)),
                fix="for a per-pixel/voxel output set the task to segmentation "
                "([model] task = \"segmentation\")", code="bad-output",
            )
        return int(shape[-1])

    def decode(self, logits: np.ndarray, spec: TaskSpec, labels: Sequence[str]) -> np.ndarray:
        return activate(logits, spec, axis=-1)
