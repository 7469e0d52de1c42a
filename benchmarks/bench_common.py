"""Constants and helpers shared by the benchmark suites."""

from __future__ import annotations

from typing import Any

import numpy as np

#: the models of the bars (MONAI, 2D, 1 channel, 1x224x224, 2 classes, random weights)
MODELS = {
    "densenet121": "monai:DenseNet121 spatial_dims=2 in_channels=1 out_channels=2",
    "resnet18": "monai:resnet18 spatial_dims=2 n_input_channels=1 num_classes=2",
}
INPUT = (1, 1, 224, 224)
THREADS = 2


def top1_agreement(ref: np.ndarray, out: np.ndarray) -> float:
    return float((ref.argmax(1) == out.argmax(1)).mean())


def logits(run: Any, x: np.ndarray) -> np.ndarray:
    """Outputs of ``run`` (one batch -> first output) for every sample of ``x``, batch 1."""
    return np.concatenate([np.asarray(run(x[i:i + 1]), np.float32) for i in range(len(x))])
