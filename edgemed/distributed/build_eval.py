"""``edgemed build --ray``: the build's gate logits through Ray Data when the validation set is a
DICOM folder (``BuildOptions.ray``).

``RayClassificationEvaluator`` implements the build's ``Evaluator`` protocol
(``edgemed.tasks``): ``outputs(art, backend, options)`` ships the artifact's files and manifest
to Ray Data actors, each opens one session and decodes its files in the worker. The files are
cut into chunks of the evaluator's batch (starting at 0, as ``batched_logits`` cuts the
in-memory arrays), one chunk per row, and each chunk is decoded as ``load_folder`` decodes it
and run as one batch: the same inputs, the same calls, so the same logits and verdict as the
single-process build. Only the first file is decoded on the driver (the crash probe and the
timing take one sample).
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgemed_runtime import Artifact, IOSpec, PreprocessSpec

from ..errors import CalibrationError, EdgemedError, InvalidInputError
from ..evaluate import GateConfig, GateResult, check_labels, run_gate
from .cluster import connect, import_ray
from .data_eval import collect, error_rows, named, skippable, unpack


def _decode(paths: list[str], spec: PreprocessSpec) -> tuple[np.ndarray | None, np.ndarray]:
    """The model inputs of ``paths`` (as ``load_folder`` reads them) and which were read (a file
    without a DICOM suffix that is no DICOM image is skipped, as there)."""
    from edgemed_runtime.sdk import load_input

    xs, kept = [], []
    for p in paths:
        try:
            xs.append(load_input(p, spec))
            kept.append(True)
        except EdgemedError as exc:
            if not skippable(exc, p):
                raise named(exc, p) from None
            kept.append(False)
    x = np.stack(xs).astype(np.float32, copy=False) if xs else None
    return x, np.asarray(kept, dtype=bool)


class _ChunkScorer:
    """A Ray Data actor: one session of the shipped artifact; one row = one chunk of files."""

    def __init__(self, files: dict[str, bytes], manifest: dict[str, Any], backend: str,
                 options: dict[str, Any], spec: dict[str, Any], batch: int) -> None:
        from edgemed_runtime import open_artifact

        self._tmp = tempfile.TemporaryDirectory(prefix="edgemed-gate-")
        self.art = Artifact.from_dict(manifest, unpack(files, Path(self._tmp.name), True))
        self.sess = open_artifact(self.art, backend=backend, options=options)
        self.spec = PreprocessSpec.from_dict(spec)
        io: IOSpec = self.art.io
        self.batch = batch if io.dynamic_batch else io.input_shape[0]
        self._k: int | None = None

    def width(self) -> int:
        """The number of logits (one zero batch through the session, once)."""
        if self._k is None:
            io = self.art.io
            zero = np.zeros((self.batch, *io.input_shape[1:]), np.float32)
            self._k = int(self.sess.run({io.input_name: zero})[io.output_names[0]].shape[1])
        return self._k

    def _chunk(self, start: int, paths: list[str]) -> tuple[np.ndarray, np.ndarray]:
        x, kept = _decode(paths, self.spec)
        io = self.art.io
        out = None
        if x is not None:
            out = np.concatenate([self.sess.run({io.input_name: x[i:i + self.batch]})[
                io.output_names[0]] for i in range(0, len(x), self.batch)]).astype(np.float32)
        full = np.full((len(paths), self.width()), np.nan, dtype=np.float32)
        if out is not None:
            full[kept] = out
        return np.arange(start, start + len(paths)), full

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        chunks = [(int(s), json.loads(str(p))) for s, p in zip(batch["start"], batch["paths"])]
        try:
            parts = [self._chunk(s, p) for s, p in chunks]
        except EdgemedError as exc:
            index = np.concatenate([np.arange(s, s + len(p)) for s, p in chunks])
            return error_rows(exc, index, self.width())
        logits = np.concatenate([lg for _, lg in parts])
        return {"index": np.concatenate([i for i, _ in parts]), "logits": logits,
                "error": np.full(len(logits), "")}


def artifact_logits_on_ray(art: Artifact, backend: str, options: dict[str, Any],
                           files: list[Path], spec: PreprocessSpec, *, batch: int = 16,
                           actors: int = 2) -> np.ndarray:
    """(N, K) first-output logits of ``art`` (with ``backend`` and ``options``) on ``files``,
    decoded and run by ``actors`` Ray Data actors in chunks of ``batch`` (NaN rows for skipped
    files). Call ``connect`` first. Raises InvalidInputError for an in-memory torch model, and
    what a worker raised on a file (named)."""
    ray = import_ray()
    if art.format == "torch":
        raise InvalidInputError("an in-memory torch model cannot be sent to Ray workers",
                                expected="an exported artifact (onnx, openvino...)",
                                found="torch", code="bad-artifact")
    eff = batch if art.io.dynamic_batch else art.io.input_shape[0]
    rows = [{"start": i, "paths": json.dumps([str(f) for f in files[i:i + eff]])}
            for i in range(0, len(files), eff)]
    ds = ray.data.from_items(rows, override_num_blocks=max(1, min(len(rows), 4 * actors)))
    shipped = {n: (Path(art.path) / n).read_bytes() for n in (art.model_file, *art.extra_files)}
    scored = ds.map_batches(
        _ChunkScorer, batch_size=max(1, 64 // eff), num_cpus=1, concurrency=actors,
        fn_constructor_kwargs={"files": shipped, "manifest": art.to_dict(), "backend": backend,
                               "options": dict(options), "spec": spec.to_dict(), "batch": batch})
    return collect(scored, len(files))


@dataclass
class RayClassificationEvaluator:
    """The classification gate on a DICOM folder, its logits from Ray Data (the protocol of
    ``edgemed.tasks.classification.ClassificationEvaluator``)."""

    files: list[Path]
    y: np.ndarray | None
    cfg: GateConfig
    spec: PreprocessSpec
    first: np.ndarray
    batch: int = 16
    actors: int = 2
    keep: np.ndarray | None = None

    @property
    def labelled(self) -> bool:
        return self.y is not None

    @property
    def inputs(self) -> np.ndarray:
        return self.first

    def outputs(self, art: Artifact, backend: str, options: dict[str, Any]) -> np.ndarray:
        lg = artifact_logits_on_ray(art, backend, options, self.files, self.spec,
                                    batch=self.batch, actors=self.actors)
        if self.keep is None:
            self.keep = ~np.isnan(lg).any(axis=1)
        return lg[self.keep]

    def verdict(self, ref: np.ndarray, cand: np.ndarray) -> GateResult:
        y = self.y[self.keep] if self.y is not None and self.keep is not None else self.y
        return run_gate(ref, cand, y, self.cfg)


def ray_gate_data(validation: str | os.PathLike[str], io: IOSpec, spec: PreprocessSpec,
                  n_classes: int, *, cfg: GateConfig, batch: int, address: str,
                  actors: int = 2) -> tuple[IOSpec, RayClassificationEvaluator, str]:
    """The build's (IO spec, evaluator, what) for a DICOM validation folder gated on Ray.

    Raises:
        InvalidInputError: not a DICOM folder (``bad-option``), the folder's own errors
            (``load_folder``'s), ``ray-unreachable``.
    """
    from ..dicom.folder import labelled_files

    p = Path(validation)
    if not p.is_dir() or any(p.glob("*.np[yz]")):
        raise InvalidInputError("--ray gates a validation set that is a DICOM folder",
                                expected="a folder of DICOM files (labels.csv or class "
                                "sub-folders)", found=str(p.name), code="bad-option",
                                fix="drop --ray for arrays, or pass the DICOM folder")
    files, y, names = labelled_files(p, io.labels or None, require_labels=False)
    if y is not None and not io.labels and names:
        io = IOSpec(**{**io.__dict__, "labels": tuple(names)})
    check_labels(y, n_classes)
    x, kept = _decode([str(f) for f in files[:8]], spec)
    if x is None:
        raise InvalidInputError("no DICOM image among the first validation files",
                                expected="DICOM images", found=f"{len(kept)} skipped",
                                code="empty")
    if tuple(x.shape[1:]) != io.sample_shape:
        raise CalibrationError("validation data has the wrong shape",
                               expected="Nx" + "x".join(map(str, io.sample_shape)),
                               found="x".join(map(str, x.shape)), code="shape",
                               fix="use the model's input size in the PreprocessSpec")
    connect(address)
    ev = RayClassificationEvaluator(files=list(files), y=y, cfg=cfg, spec=spec, first=x[:1],
                                    batch=batch, actors=actors)
    what = "validation set" + ("" if y is not None else " (unlabelled: agreement only)")
    return io, ev, what + f" (logits through Ray Data, {actors} actors)"
