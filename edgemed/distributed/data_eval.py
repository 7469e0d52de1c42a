"""The gate over a large DICOM dataset through Ray Data, equal to the single-process run.

The dataset is a list of DICOM file paths (readable from the workers: the same disk, or shared
storage); only paths and indices enter Ray Data. Each actor opens one runtime session per model
(an ONNX file or a bundle, sent as bytes) and decodes and runs its files one at a time (batch 1,
so the outputs do not depend on how Ray Data cut the batches); the driver receives
``(index, logits)`` only, into one preallocated (N, K) array, so its memory does not grow with
the images. ``logits_local`` is the single-process path with the same per-file calls.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from edgemed_runtime import PreprocessSpec

from ..errors import InvalidInputError
from ..evaluate import GateConfig, GateResult, run_gate
from .cluster import connect, import_ray


def _open(path: Path, preprocess: dict[str, Any] | None, threads: int,
          open_args: dict[str, Any]) -> Any:
    import edgemed_runtime

    spec = PreprocessSpec.from_dict(preprocess) if preprocess else None
    kw = {"preprocess": spec} if path.suffix == ".onnx" else dict(open_args)
    return edgemed_runtime.open(path, options={"threads": threads}, **kw)


def _per_file(sess: Any, paths: Sequence[str]) -> np.ndarray:
    return np.concatenate([np.asarray(sess.logits(p), dtype=np.float32) for p in paths])


def _model_file(model: str | os.PathLike[str]) -> Path:
    p = Path(model)
    if not p.is_file():
        raise InvalidInputError("model file not found", expected="an .onnx file or a .edgemed "
                                "bundle file", found=str(p), code="not-found")
    return p


def logits_local(model: str | os.PathLike[str], files: Sequence[str | os.PathLike[str]], *,
                 preprocess: PreprocessSpec | None = None, threads: int = 1,
                 open_args: dict[str, Any] | None = None) -> np.ndarray:
    """(N, K) float32 logits of ``model`` on ``files``, in this process, one file at a time."""
    with _open(_model_file(model), preprocess.to_dict() if preprocess else None, threads,
               open_args or {}) as sess:
        return _per_file(sess, [str(f) for f in files])


class _Scorer:
    """A Ray Data actor: one session, opened once; scores a batch of (index, path) rows."""

    def __init__(self, blob: bytes, suffix: str, preprocess: dict[str, Any] | None,
                 threads: int, open_args: dict[str, Any]) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="edgemed-eval-")
        path = Path(self._tmp.name) / f"model{suffix}"
        path.write_bytes(blob)
        self.sess = _open(path, preprocess, threads, open_args)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        logits = _per_file(self.sess, [str(p) for p in batch["path"]])
        return {"index": np.asarray(batch["index"]), "logits": logits}


def logits_on_ray(model: str | os.PathLike[str], files: Sequence[str | os.PathLike[str]], *,
                  preprocess: PreprocessSpec | None = None, threads: int = 1,
                  actors: int = 2, batch_size: int = 32,
                  open_args: dict[str, Any] | None = None) -> np.ndarray:
    """(N, K) float32 logits of ``model`` on ``files`` computed by ``actors`` Ray Data actors
    (one CPU each); the same numbers as ``logits_local``. Call ``connect`` first.

    Raises:
        InvalidInputError: no files, or the model file is missing.
    """
    ray = import_ray()
    p = _model_file(model)
    if not files:
        raise InvalidInputError("no files to evaluate", expected="at least one DICOM file",
                                found="an empty list", code="empty")
    ds = ray.data.from_items([{"index": i, "path": str(f)} for i, f in enumerate(files)],
                             override_num_blocks=max(actors, len(files) // max(1, batch_size)))
    scored = ds.map_batches(
        _Scorer, batch_size=batch_size, num_cpus=1, concurrency=actors,
        fn_constructor_kwargs={"blob": p.read_bytes(), "suffix": p.suffix,
                               "preprocess": preprocess.to_dict() if preprocess else None,
                               "threads": threads, "open_args": dict(open_args or {})})
    out: np.ndarray | None = None
    seen = 0
    for b in scored.iter_batches(batch_size=256, batch_format="numpy"):
        lg = np.asarray(b["logits"], dtype=np.float32)
        if out is None:
            out = np.full((len(files), lg.shape[1]), np.nan, dtype=np.float32)
        out[np.asarray(b["index"])] = lg
        seen += len(lg)
    assert out is not None and seen == len(files), "Ray Data lost or repeated rows"
    return out


def gate_on_ray(reference: str | os.PathLike[str], candidate: str | os.PathLike[str],
                files: Sequence[str | os.PathLike[str]], labels: np.ndarray | None,
                cfg: GateConfig | None = None, *, address: str | None = None,
                preprocess: PreprocessSpec | None = None, actors: int = 2, threads: int = 1,
                open_args: dict[str, Any] | None = None) -> GateResult:
    """The accuracy gate of ``candidate`` against ``reference`` on ``files`` (labels or None).

    With ``address`` the logits come from Ray Data (joining that cluster); without, from this
    process. Either way ``run_gate`` decides on the driver: the verdicts are identical.
    """
    kw: dict[str, Any] = {"preprocess": preprocess, "threads": threads, "open_args": open_args}
    if address is not None:
        connect(address)
        ref = logits_on_ray(reference, files, actors=actors, **kw)
        cand = logits_on_ray(candidate, files, actors=actors, **kw)
    else:
        ref = logits_local(reference, files, **kw)
        cand = logits_local(candidate, files, **kw)
    return run_gate(ref, cand, labels, cfg or GateConfig())


def evaluate_files(model: str | os.PathLike[str], files: Sequence[str | os.PathLike[str]],
                   labels: np.ndarray, *, address: str | None = None,
                   preprocess: PreprocessSpec | None = None, actors: int = 2,
                   threads: int = 1) -> dict[str, float]:
    """Classification metrics (accuracy, AUC...) of ``model`` on labelled ``files``, through
    Ray Data when ``address`` is given, else in this process (the same numbers)."""
    from edgemed_runtime.sdk import softmax

    from ..evaluate import classification_metrics

    if address is not None:
        connect(address)
        lg = logits_on_ray(model, files, preprocess=preprocess, actors=actors, threads=threads)
    else:
        lg = logits_local(model, files, preprocess=preprocess, threads=threads)
    return classification_metrics(softmax(lg), np.asarray(labels))
