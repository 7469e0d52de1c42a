"""Tasks: what a model's output means. ``TASKS`` maps a task name to its implementation."""

from __future__ import annotations

from .base import Task, TaskSpec, activate, sigmoid, softmax
from .classification import Classification
from .multilabel import Multilabel
from .segmentation import Segmentation, SegmentationResult, label_map

TASKS: dict[str, Task] = {
    "classification": Classification(),
    "multilabel": Multilabel(),
    "segmentation": Segmentation(),
}

__all__ = ["TASKS", "Task", "TaskSpec", "SegmentationResult", "activate", "label_map",
           "sigmoid", "softmax"]
