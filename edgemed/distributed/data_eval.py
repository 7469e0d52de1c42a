"""The gate over a large DICOM dataset through Ray Data, equal to the single-process run.

The dataset is a list of DICOM file paths (readable from the workers: the same disk, or shared
storage); only paths and indices enter Ray Data. Each actor opens one runtime session per model
(an ONNX file or a bundle, sent as bytes) and decodes and runs its files one at a time (batch 1,
so the outputs do not depend on how Ray Data cut the batches); the driver receives
``(index, logits)`` only, into one preallocated (N, K) array, so its memory does not grow with
the images. ``logits_local`` is the single-process path with the same per-file calls.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from edgemed_runtime import PreprocessSpec

from ..errors import EdgemedError, InvalidInputError
from ..evaluate import GateConfig, GateResult, run_gate
from .cluster import connect, import_ray


SKIPPABLE = ("not-dicom", "no-pixel-data")
"""Codes of a file without a DICOM suffix that is skipped (a NaN row), as ``load_folder`` does."""


def skippable(exc: EdgemedError, path: str | os.PathLike[str]) -> bool:
    """Whether a file's refusal is one the build skips too: a suffix-less non-DICOM file."""
    return Path(path).suffix == "" and exc.code in SKIPPABLE


def named(exc: EdgemedError, path: str | os.PathLike[str]) -> EdgemedError:
    """``exc`` again, its message prefixed with the file's name (the same error class)."""
    return type(exc)(f"{Path(path).name}: {exc.message}", expected=exc.expected,
                     found=exc.found, fix=exc.fix or "remove or repair that file", code=exc.code)


def _open(path: Path, preprocess: dict[str, Any] | None, threads: int,
          open_args: dict[str, Any]) -> Any:
    import edgemed_runtime

    spec = PreprocessSpec.from_dict(preprocess) if preprocess else None
    kw = {"preprocess": spec} if path.suffix == ".onnx" else dict(open_args)
    return edgemed_runtime.open(path, options={"threads": threads}, **kw)


def _per_file(sess: Any, paths: Sequence[str]) -> np.ndarray:
    """(n, K) logits, one call per file; a file without a DICOM suffix that is no DICOM image
    gets a NaN row; any other unreadable file raises its error, naming the file."""
    rows: list[np.ndarray | None] = []
    for p in paths:
        try:
            rows.append(np.asarray(sess.logits(p), dtype=np.float32).reshape(1, -1))
        except EdgemedError as exc:
            if not skippable(exc, p):
                raise named(exc, p) from None
            rows.append(None)
    k = next((r.shape[1] for r in rows if r is not None), None)
    if k is None:  # every file of the batch skipped: the width from one zero input
        k = int(np.asarray(sess.logits(np.zeros(sess.io.input_shape, np.float32))).shape[-1])
    return np.concatenate([r if r is not None else np.full((1, k), np.nan, np.float32)
                           for r in rows])


def _model_path(model: str | os.PathLike[str]) -> Path:
    p = Path(model)
    if not p.exists():
        raise InvalidInputError("model not found", expected="an .onnx file, an artifact folder "
                                "or a .edgemed bundle", found=str(p), code="not-found",
                                fix="check the path")
    return p


def pack(p: Path) -> dict[str, bytes]:
    """A model file or folder (artifact, bundle directory) as ``{relative name: bytes}``."""
    if p.is_file():
        return {p.name: p.read_bytes()}
    return {str(f.relative_to(p)): f.read_bytes() for f in sorted(p.rglob("*")) if f.is_file()}


def unpack(files: dict[str, bytes], folder: Path, is_dir: bool) -> Path:
    """Write ``pack``'s files under ``folder``; returns the model path (file or folder)."""
    root = folder / "model" if is_dir else folder
    for rel, blob in files.items():
        out = (root / rel).resolve()
        if not out.is_relative_to(root.resolve()):
            raise InvalidInputError("a packed model file leaves its folder", expected="relative "
                                    "names", found=rel, code="bad-archive")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(blob)
    return root if is_dir else root / next(iter(files))


def logits_local(model: str | os.PathLike[str], files: Sequence[str | os.PathLike[str]], *,
                 preprocess: PreprocessSpec | None = None, threads: int = 1,
                 open_args: dict[str, Any] | None = None) -> np.ndarray:
    """(N, K) float32 logits of ``model`` on ``files``, in this process, one file at a time
    (NaN rows for skipped non-DICOM files without a suffix)."""
    with _open(_model_path(model), preprocess.to_dict() if preprocess else None, threads,
               open_args or {}) as sess:
        return _per_file(sess, [str(f) for f in files])


class _Scorer:
    """A Ray Data actor: one session, opened once; scores a batch of (index, path) rows."""

    def __init__(self, files: dict[str, bytes], is_dir: bool, preprocess: dict[str, Any] | None,
                 threads: int, open_args: dict[str, Any]) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="edgemed-eval-")
        path = unpack(files, Path(self._tmp.name), is_dir)
        self.sess = _open(path, preprocess, threads, open_args)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        index = np.asarray(batch["index"])
        try:
            logits = _per_file(self.sess, [str(p) for p in batch["path"]])
        except EdgemedError as exc:
            return error_rows(exc, index, width(self.sess))
        return {"index": index, "logits": logits, "error": np.full(len(index), "")}


def width(sess: Any) -> int:
    """The number of logits of ``sess``'s model (one zero input)."""
    return int(np.asarray(sess.logits(np.zeros(sess.io.input_shape, np.float32))).shape[-1])


def error_rows(exc: EdgemedError, index: np.ndarray, k: int) -> dict[str, np.ndarray]:
    """The rows of a batch whose files raised ``exc``: NaN logits and the error as JSON (Ray
    Data passes a worker's exception to the driver only as text)."""
    return {"index": index, "logits": np.full((len(index), k), np.nan, np.float32),
            "error": np.full(len(index), json.dumps(exc.to_dict()))}


def _rebuild(doc: dict[str, Any]) -> EdgemedError:
    """A worker's error (``to_dict``) as the same EdgemedError class on the driver."""
    from .. import errors

    cls = getattr(errors, str(doc.get("type")), None)
    if not (isinstance(cls, type) and issubclass(cls, EdgemedError)):
        cls = EdgemedError
    return cls(str(doc.get("message")), expected=doc.get("expected"), found=doc.get("found"),
               fix=doc.get("fix"), code=doc.get("code"))


def collect(scored: Any, n: int) -> np.ndarray:
    """Ray Data rows ``(index, logits, error)`` into one (n, K) array; the first error a worker
    returned is raised as its EdgemedError."""
    out: np.ndarray | None = None
    seen = 0
    for b in scored.iter_batches(batch_size=256, batch_format="numpy"):
        errs = [e for e in np.asarray(b["error"]).tolist() if e]
        if errs:
            raise _rebuild(json.loads(errs[0]))
        lg = np.asarray(b["logits"], dtype=np.float32)
        if out is None:
            out = np.full((n, lg.shape[1]), np.nan, dtype=np.float32)
        out[np.asarray(b["index"])] = lg
        seen += len(lg)
    assert out is not None and seen == n, "Ray Data lost or repeated rows"
    return out


def logits_on_ray(model: str | os.PathLike[str], files: Sequence[str | os.PathLike[str]], *,
                  preprocess: PreprocessSpec | None = None, threads: int = 1,
                  actors: int = 2, batch_size: int = 32,
                  open_args: dict[str, Any] | None = None) -> np.ndarray:
    """(N, K) float32 logits of ``model`` (an .onnx file, artifact folder or bundle) on
    ``files`` computed by ``actors`` Ray Data actors (one CPU each); the same numbers as
    ``logits_local``. Call ``connect`` first.

    Raises:
        InvalidInputError: no files, or the model is missing; what a worker raised on a file.
    """
    ray = import_ray()
    p = _model_path(model)
    if not files:
        raise InvalidInputError("no files to evaluate", expected="at least one DICOM file",
                                found="an empty list", code="empty")
    ds = ray.data.from_items([{"index": i, "path": str(f)} for i, f in enumerate(files)],
                             override_num_blocks=max(actors, len(files) // max(1, batch_size)))
    scored = ds.map_batches(
        _Scorer, batch_size=batch_size, num_cpus=1, concurrency=actors,
        fn_constructor_kwargs={"files": pack(p), "is_dir": p.is_dir(),
                               "preprocess": preprocess.to_dict() if preprocess else None,
                               "threads": threads, "open_args": dict(open_args or {})})
    return collect(scored, len(files))


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
