"""Artifact: a model file in a known format plus everything needed to run it faithfully.

On disk an artifact is a directory holding ``artifact.json`` (this class, serialised) and the
model file(s) it names. The SDK produces artifacts; the runtime opens them (or bundles of them).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

from .errors import InvalidInputError
from .inference.spec import InferenceSpec
from .iospec import IOSpec
from .preprocess import PreprocessSpec
from .specs import spec_from_dict
from .tasks import TaskSpec
from .util import atomic_write_bytes
from .volume.spec import VolumeSpec

ARTIFACT_FILE = "artifact.json"
ARTIFACT_VERSION = 1
FORMATS = ("torch", "onnx", "onnx-qdq", "openvino-ir", "ort", "trt-plan-recipe", "pte", "tflite")


@dataclass(frozen=True)
class Artifact:
    """One model variant.

    Attributes:
        path: the artifact directory.
        format: one of FORMATS.
        model_file: main model file, relative to ``path`` (empty for in-memory ``torch``).
        io: the IO spec.
        preprocess: the PreprocessSpec (2D) or VolumeSpec (volumes) the model was built and
            validated with.
        backend: the runtime backend that runs it.
        backend_options: backend settings the target asked for (threads, precision...).
        provenance: one record per pass, oldest first.
        metrics: the accuracy gate's results and other measurements.
        target: ``{"name": ..., "hash": ...}`` of the target profile used.
        extra_files: other files the model needs (relative to ``path``).
        task: what the model's output means (classification, multilabel, segmentation).
        inference: how the device runs the model over an input (whole or sliding windows);
            None = one call on the whole input.
        payload: an in-memory model (``torch`` format only; never serialised).
    """

    path: Path
    format: str
    model_file: str
    io: IOSpec
    preprocess: PreprocessSpec | VolumeSpec = field(default_factory=PreprocessSpec)
    backend: str = "onnxruntime"
    backend_options: Mapping[str, Any] = field(default_factory=dict)
    provenance: tuple[Mapping[str, Any], ...] = ()
    metrics: Mapping[str, Any] = field(default_factory=dict)
    target: Mapping[str, Any] = field(default_factory=dict)
    extra_files: tuple[str, ...] = ()
    task: TaskSpec = field(default_factory=TaskSpec)
    inference: InferenceSpec | None = None
    payload: Any = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise InvalidInputError(
                "unknown artifact format", expected=", ".join(FORMATS), found=self.format
            )

    @property
    def model_path(self) -> Path:
        """Absolute path of the main model file."""
        return Path(self.path) / self.model_file

    def files(self) -> list[str]:
        """Relative names of every file of the artifact (model first, manifest last)."""
        return [self.model_file, *self.extra_files, ARTIFACT_FILE]

    def evolve(self, **changes: Any) -> "Artifact":
        """Return a copy with ``changes`` applied (dataclasses.replace)."""
        return replace(self, **changes)

    def with_record(self, record: Mapping[str, Any]) -> "Artifact":
        """Return a copy with one more provenance record."""
        return replace(self, provenance=(*self.provenance, dict(record)))

    def to_dict(self) -> dict[str, Any]:
        d = self._fields_dict()
        if self.inference is not None:
            d["inference"] = self.inference.to_dict()
        return d

    def _fields_dict(self) -> dict[str, Any]:
        return {
            "kind": "edgemed-artifact",
            "artifact_version": ARTIFACT_VERSION,
            "format": self.format,
            "model_file": self.model_file,
            "extra_files": list(self.extra_files),
            "backend": self.backend,
            "backend_options": dict(self.backend_options),
            "io": self.io.to_dict(),
            "preprocess": self.preprocess.to_dict(),
            "target": dict(self.target),
            "metrics": dict(self.metrics),
            "provenance": [dict(r) for r in self.provenance],
            "task": self.task.to_dict(),
        }

    def save(self) -> Path:
        """Write ``artifact.json`` atomically into ``path``; return its path."""
        if self.format == "torch":
            raise InvalidInputError("an in-memory torch model cannot be saved as an artifact")
        out = Path(self.path) / ARTIFACT_FILE
        atomic_write_bytes(out, json.dumps(self.to_dict(), indent=2, sort_keys=True).encode())
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], path: str | os.PathLike[str]) -> "Artifact":
        if d.get("kind") != "edgemed-artifact":
            raise InvalidInputError(
                "not an edgemed artifact manifest", expected='"kind": "edgemed-artifact"',
                found=str(d.get("kind")),
            )
        if int(d.get("artifact_version", 0)) > ARTIFACT_VERSION:
            raise InvalidInputError(
                "artifact is newer than this runtime",
                expected=f"artifact_version <= {ARTIFACT_VERSION}",
                found=str(d.get("artifact_version")), fix="upgrade edgemed",
            )
        return cls(
            path=Path(path),
            format=str(d["format"]),
            model_file=str(d["model_file"]),
            extra_files=tuple(d.get("extra_files", ())),
            backend=str(d.get("backend", "onnxruntime")),
            backend_options=dict(d.get("backend_options", {})),
            io=IOSpec.from_dict(d["io"]),
            preprocess=spec_from_dict(d.get("preprocess", {})),
            target=dict(d.get("target", {})),
            metrics=dict(d.get("metrics", {})),
            provenance=tuple(d.get("provenance", ())),
            inference=(None if d.get("inference") is None
                       else InferenceSpec.from_dict(d["inference"])),
            task=TaskSpec.from_dict(d.get("task")),
        )

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "Artifact":
        """Load an artifact directory (or its ``artifact.json``).

        Raises:
            InvalidInputError: the path does not exist or holds no valid artifact.
        """
        p = Path(path)
        if p.is_file() and p.name == ARTIFACT_FILE:
            p = p.parent
        manifest = p / ARTIFACT_FILE
        if not manifest.is_file():
            raise InvalidInputError(
                "no edgemed artifact here", expected=f"a directory containing {ARTIFACT_FILE}",
                found=str(p), fix="pass the output directory of `edgemed build`", code="not-found",
            )
        try:
            d = json.loads(manifest.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InvalidInputError(
                "artifact manifest is not valid JSON", found=f"{manifest}: {exc}"
            ) from None
        try:
            return cls.from_dict(d, p)
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidInputError(
                "artifact manifest is incomplete", found=f"{type(exc).__name__}: {exc}"
            ) from None
