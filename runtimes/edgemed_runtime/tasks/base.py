"""TaskSpec and the Task protocol: what a model's output means and how it is decoded.

The task is stored with the artifact (``artifact.json`` / ``bundle.json`` field ``task``). One
module per task (``classification.py``, ``multilabel.py``, ``segmentation.py``) owns the output
check, the decoding and what ``Session.predict`` returns; adding a task is one module plus one
line in ``tasks/__init__.py``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Protocol, Sequence

import numpy as np

from ..errors import InvalidInputError

ACTIVATIONS = ("softmax", "sigmoid")


@dataclass(frozen=True)
class TaskSpec:
    """What the model's first output is.

    Fields:
        name: ``classification`` (softmax over classes), ``multilabel`` (sigmoid per label,
            ``thresholds``) or ``segmentation`` (per-voxel softmax or sigmoid).
        activation: ``softmax`` or ``sigmoid`` (multilabel: always sigmoid).
        thresholds: per-label decision thresholds for sigmoid outputs (empty: 0.5 each).
    """

    name: str = "classification"
    activation: str = "softmax"
    thresholds: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        from . import TASKS

        if self.name not in TASKS:
            raise InvalidInputError("unknown task", expected=", ".join(TASKS), found=self.name,
                                    code="bad-task")
        if self.activation not in ACTIVATIONS:
            raise InvalidInputError("unknown output activation", expected=", ".join(ACTIVATIONS),
                                    found=self.activation, code="bad-task")
        if self.name == "multilabel" and self.activation != "sigmoid":
            object.__setattr__(self, "activation", "sigmoid")
        ths = tuple(float(t) for t in self.thresholds)
        if any(not (0.0 < t < 1.0) or math.isnan(t) for t in ths):
            raise InvalidInputError("thresholds must lie in (0, 1)", found=str(ths), code="bad-task")
        object.__setattr__(self, "thresholds", ths)

    @property
    def task(self) -> "Task":
        """The Task object that implements this spec."""
        from . import TASKS

        return TASKS[self.name]

    def threshold_array(self, n: int) -> np.ndarray:
        """The thresholds as an (n,) float32 array (0.5 where none was given)."""
        if self.thresholds and len(self.thresholds) != n:
            raise InvalidInputError("one threshold per output label is needed",
                                    expected=str(n), found=str(len(self.thresholds)),
                                    code="bad-task")
        return np.asarray(self.thresholds or (0.5,) * n, dtype=np.float32)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "activation": self.activation}
        if self.thresholds:
            d["thresholds"] = list(self.thresholds)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> "TaskSpec":
        """A TaskSpec from its dict (``None`` or ``{}``: classification, as before tasks existed)."""
        if not d:
            return cls()
        return cls(name=str(d.get("name", "classification")),
                   activation=str(d.get("activation", "softmax")),
                   thresholds=tuple(d.get("thresholds", ())))


class Task(Protocol):
    """One task: output checks and decoding (see the task modules)."""

    name: str
    spatial_output: bool  # True when the output keeps the input's spatial axes

    def check_output(self, shape: Sequence[int], input_shape: Sequence[int],
                     labels: Sequence[str]) -> int:
        """Raise InvalidInputError unless a model output of ``shape`` fits the task; return
        the number of output channels (classes / labels)."""

    def decode(self, logits: np.ndarray, spec: TaskSpec, labels: Sequence[str]) -> Any:
        """What ``Session.predict`` returns for a batch of raw first outputs."""


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax."""
    z = x - x.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Numerically stable logistic function."""
    out = np.empty_like(x, dtype=np.float32)
    pos = x >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-x[pos]))
    e = np.exp(x[~pos])
    out[~pos] = e / (1.0 + e)
    return out


def activate(logits: np.ndarray, spec: TaskSpec, axis: int) -> np.ndarray:
    """Probabilities from logits with the spec's activation over ``axis``."""
    x = np.asarray(logits, dtype=np.float32)
    return softmax(x, axis=axis) if spec.activation == "softmax" else sigmoid(x)
