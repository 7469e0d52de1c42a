"""Mean Dice as NNCF's accuracy-control metric: the ``validation_fn`` of
``nncf.quantize_with_accuracy_control`` for a segmentation model.

Each validation case goes through the device pipeline with the model NNCF hands over (an
``ov.CompiledModel``): the artifact's ``VolumeSpec``, whole or sliding-window inference, the
task's label map, labels mapped back onto the original voxel grid (nearest), then Dice per
foreground label against the case's target, with the gate's empty-mask rules (label in neither:
1, in one only: 0), averaged over labels. The target is the ground-truth mask when every case
has one (``reference = "ground-truth masks"``), else the FP32 model's own labels
(``reference = "FP32 labels (agreement)"``): then the FP32 model scores 1.0 and the drop NNCF
controls is the loss of agreement.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from ..errors import InvalidInputError

GROUND_TRUTH = "ground-truth masks"
AGREEMENT = "FP32 labels (agreement)"


def case_dice(pred: np.ndarray, target: np.ndarray, n_labels: int) -> float:
    """Mean over labels 1..``n_labels`` of Dice(pred == k, target == k); a label in neither
    map scores 1, in exactly one 0 (the gate's ``EMPTY_RULES``)."""
    scores = []
    for k in range(1, n_labels + 1):
        p, t = pred == k, target == k
        total = int(p.sum()) + int(t.sum())
        scores.append(1.0 if total == 0 else 2.0 * int((p & t).sum()) / total)
    return float(np.mean(scores)) if scores else 1.0


def compiled_predictor(compiled: Any) -> Callable[[np.ndarray], np.ndarray]:
    """``window batch -> first output`` of an ``ov.CompiledModel``."""
    out = compiled.output(0)
    return lambda batch: np.asarray(compiled([np.ascontiguousarray(batch, np.float32)])[out])


@dataclass
class DiceValidation:
    """The validation cases on the model grid and their targets on the original grid.

    Fields:
        batches: per case the model-ready (1, C, *spatial) float32 input and its placement.
        targets: per case the (z, y, x) labels Dice is measured against.
        artifact: the ONNX artifact being quantized (its VolumeSpec, inference and task).
        n_labels: foreground labels (Dice over 1..n_labels); reference: GROUND_TRUTH / AGREEMENT.
    """

    batches: list[tuple[np.ndarray, Any]]
    targets: list[np.ndarray]
    artifact: Any
    n_labels: int
    reference: str = GROUND_TRUTH
    calls: list[int] = field(default_factory=list)

    def labels(self, compiled: Any, i: int) -> np.ndarray:
        """Case ``i``'s label volume on its original grid from ``compiled``."""
        from edgemed_runtime.sdk import activate, sliding_window, source_labels

        batch, placement = self.batches[i]
        predict = compiled_predictor(compiled)
        art = self.artifact
        out = (predict(batch) if art.inference is None else
               sliding_window(batch, predict, art.inference))
        return source_labels(art.preprocess, activate(out[0], art.task, axis=0), placement,
                             art.task)

    def __call__(self, compiled: Any, items: Iterable[Any]) -> tuple[float, list[float]]:
        """NNCF's ``validation_fn``: (mean Dice over ``items``, each item's Dice); an item is a
        case index."""
        scores = [case_dice(self.labels(compiled, int(i)), self.targets[int(i)], self.n_labels)
                  for i in items]
        self.calls.append(len(scores))
        return (float(np.mean(scores)) if scores else 0.0), scores


def dice_validation(artifact: Any, volumes: Sequence[Any], truths: Sequence[np.ndarray] | None,
                    n_labels: int, fp32: Any = None) -> DiceValidation:
    """A ``DiceValidation`` of ``volumes`` (Volumes) for ``artifact``: against ``truths`` when
    given, else against the labels of ``fp32`` (an ``ov.CompiledModel`` of the FP32 model).

    Raises:
        InvalidInputError: ``empty`` (no case), ``bad-option`` (no truths and no FP32 model).
    """
    if not volumes:
        raise InvalidInputError("accuracy-controlled quantization needs validation series",
                                expected="at least one series", found="none", code="empty")
    if truths is None and fp32 is None:
        raise InvalidInputError("no masks and no FP32 model to measure Dice against",
                                expected="masks, or the FP32 model (agreement)", found="neither",
                                code="bad-option")
    spec = artifact.preprocess
    batches = []
    for v in volumes:
        arr, placement = spec.apply(v)
        batches.append((np.ascontiguousarray(arr[None], np.float32), placement))
    val = DiceValidation(batches=batches, targets=list(truths or []), artifact=artifact,
                         n_labels=n_labels, reference=GROUND_TRUTH if truths is not None
                         else AGREEMENT)
    if truths is None:
        val.targets = [val.labels(fp32, i) for i in range(len(batches))]
    return val
