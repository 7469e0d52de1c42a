"""Session: the one inference API over every backend.

``run(dict)`` feeds raw tensors; ``predict(x)`` takes DICOM paths, arrays or batches, applies the
artifact's PreprocessSpec and returns class probabilities.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from .backends.base import BackendSession
from .errors import InvalidInputError
from .iospec import IOSpec
from .preprocess import PreprocessSpec
from .tasks import TaskSpec


@dataclass(frozen=True)
class TensorInfo:
    """Name, shape (``-1`` for a dynamic dimension) and dtype of a model input or output."""

    name: str
    shape: tuple[int, ...]
    dtype: str


def _is_volume(preprocess: Any) -> bool:
    from .volume.spec import VolumeSpec

    return isinstance(preprocess, VolumeSpec)


class Session:
    """A model ready to run. ``run`` / ``predict`` / ``logits`` may be called from several
    threads at once: the session holds no per-call state, and every backend session is safe for
    concurrent calls (each result is the serial result of the same input).

    Args:
        backend_session: the backend's loaded model.
        io: the IO spec.
        preprocess: the PreprocessSpec (2D) or VolumeSpec (3D) applied by ``predict``.
        backend: the backend's name.
        info: extra description (format, bundle id...) shown by ``describe``.
        task: what the output means (default: classification).
        inference: how a volume is run (whole or sliding window; None: whole).
    """

    def __init__(
        self,
        backend_session: BackendSession,
        io: IOSpec,
        preprocess: Any,
        backend: str,
        info: Mapping[str, Any] | None = None,
        *,
        task: TaskSpec | None = None,
        inference: Any = None,
    ) -> None:
        self._bs: BackendSession | None = backend_session
        self.io = io
        self.preprocess = preprocess
        self.backend = backend
        self.info = dict(info or {})
        self.task = task or TaskSpec()
        self.inference = inference

    # -- description ---------------------------------------------------------------------
    @property
    def inputs(self) -> list[TensorInfo]:
        shape = ((-1,) if self.io.dynamic_batch else self.io.input_shape[:1]) + self.io.sample_shape
        return [TensorInfo(self.io.input_name, tuple(shape), self.io.input_dtype)]

    @property
    def outputs(self) -> list[TensorInfo]:
        return [TensorInfo(n, (-1,), "float32") for n in self.io.output_names]

    @property
    def labels(self) -> tuple[str, ...]:
        return self.io.labels

    @property
    def details(self) -> dict[str, Any]:
        """What the backend chose when it opened the model (``BackendSession.details``), a copy."""
        return dict(self._session().details)

    # -- running -------------------------------------------------------------------------
    def _session(self) -> BackendSession:
        if self._bs is None:
            raise InvalidInputError("session is closed", fix="open the model again")
        return self._bs

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run on raw input tensors; return ``{output_name: array}``.

        Raises:
            InvalidInputError: a missing/unknown input name or a wrong shape.
            BackendError: the backend failed.
        """
        bs = self._session()
        if set(feeds) != {self.io.input_name}:
            raise InvalidInputError(
                "wrong input names", expected=self.io.input_name, found=", ".join(sorted(feeds)),
            )
        x = np.asarray(feeds[self.io.input_name])
        self.io.check_batch(tuple(x.shape))
        x = np.ascontiguousarray(x, dtype=np.dtype(self.io.input_dtype))
        outs = bs.run({bs.input_names[0]: x})
        return dict(zip(self.io.output_names, outs))

    def logits(self, x: Any) -> np.ndarray:
        """First output for ``x`` (see ``predict`` for what ``x`` may be)."""
        batch = self.prepare(x)
        if _is_volume(self.preprocess):
            from .volume.run import forward

            return forward(self, batch)
        return self.run({self.io.input_name: batch})[self.io.output_names[0]]

    def predict(self, x: Any, *, probabilities: bool = False) -> Any:
        """Decoded output of the first model output for ``x``, by the artifact's task.

        ``x`` may be a DICOM path, a list of paths, one preprocessed sample (C, H, W...), or a
        batch (N, C, H, W...); for a volume model, a series folder, the series' files, a
        ``Volume`` or a (z, y, x) array. Returns (N, classes) probabilities for classification
        and multilabel; a ``SegmentationResult`` (labels on the input's own grid;
        ``probabilities=True`` adds them) for segmentation.
        """
        if _is_volume(self.preprocess) and not self._preprocessed(x):
            from .volume.run import predict_volume

            return predict_volume(self, x, probabilities=probabilities)
        return self.task.task.decode(self.logits(x).astype(np.float32), self.task, self.io.labels)

    def _preprocessed(self, x: Any) -> bool:
        """True for an already model-shaped array (C, *spatial) or batch."""
        return isinstance(x, np.ndarray) and x.ndim in (len(self.io.input_shape) - 1,
                                                        len(self.io.input_shape))

    def prepare(self, x: Any) -> np.ndarray:
        """Turn paths / samples / batches (or, for a volume model, a series) into one batch."""
        if _is_volume(self.preprocess) and not self._preprocessed(x):
            from .volume.run import prepare_volume

            return prepare_volume(self, x)[0]
        if isinstance(x, (str, os.PathLike)) and Path(x).is_dir():
            raise InvalidInputError(
                "this model takes single images, not a series folder",
                expected="a DICOM file (or a list of files)", found="a folder",
                fix="pass one image file, or build a volume model (a VolumeSpec) for series",
                code="not-image",
            )
        if isinstance(x, (str, os.PathLike)):
            return self._load_paths([x])
        if isinstance(x, np.ndarray):
            arr = x
            if arr.ndim == len(self.io.sample_shape):
                arr = arr[None]
            return arr
        if isinstance(x, Sequence) and x and all(isinstance(i, (str, os.PathLike)) for i in x):
            return self._load_paths(list(x))
        if isinstance(x, Iterable):
            items = [np.asarray(i) for i in x]
            if not items:
                raise InvalidInputError("empty input", expected="at least one sample")
            return np.stack(items)
        raise InvalidInputError(
            "cannot predict on this input",
            expected="a DICOM path, a list of paths, or a numpy array",
            found=type(x).__name__,
        )

    def _load_paths(self, paths: list[str | os.PathLike[str]]) -> np.ndarray:
        from .dicom import load_input

        return np.stack([load_input(Path(p), self.preprocess) for p in paths])

    # -- lifecycle -----------------------------------------------------------------------
    def close(self) -> None:
        """Release the backend's resources; the session cannot be used afterwards."""
        if self._bs is not None:
            self._bs.close()
            self._bs = None

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Session(backend={self.backend!r}, input={self.inputs[0]}, info={self.info})"
