"""``open()``: artifact directories, plain ONNX files and bundles -> Session."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

from .artifact import ARTIFACT_FILE, Artifact
from .backends import get_backend
from .errors import InvalidInputError
from .iospec import IOSpec
from .preprocess import PreprocessSpec
from .session import Session


def is_bundle(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a bundle, recognised as ``open_bundle`` reads it: a folder holding
    bundle.json or model.sig, a ``.edgemed`` path, or a file holding a tar archive (whatever its
    suffix). The one such check: the CLIs and the benchmark sources ask this too."""
    from .bundle.container import is_archive
    from .bundle.format import ARCHIVE_SUFFIX, MANIFEST_FILE, SIGNATURE_FILE

    p = Path(path)
    return ((p.is_dir() and ((p / MANIFEST_FILE).is_file() or (p / SIGNATURE_FILE).is_file()))
            or p.suffix == ARCHIVE_SUFFIX or (p.is_file() and is_archive(p)))


def open_artifact(
    artifact: Artifact, *, backend: str | None = None, options: Mapping[str, Any] | None = None
) -> Session:
    """Open an (unencrypted) artifact with its backend, or ``backend`` if given."""
    name = backend or artifact.backend
    be = get_backend(name)
    if artifact.format not in be.formats:
        raise InvalidInputError(
            f"backend {name!r} cannot run {artifact.format!r} artifacts",
            expected=", ".join(be.formats), found=artifact.format,
        )
    opts = {**dict(artifact.backend_options), **dict(options or {})}
    try:
        model = artifact.model_path.read_bytes()
    except OSError as exc:
        raise InvalidInputError(
            "artifact model file is missing", found=f"{artifact.model_path}: {exc.strerror}",
            fix="rebuild the artifact", code="not-found",
        ) from None
    bs = be.open(model, artifact.io, opts)
    return Session(bs, artifact.io, artifact.preprocess, name,
                   info={"format": artifact.format, "path": str(artifact.path)},
                   task=artifact.task, inference=getattr(artifact, "inference", None))


def open(  # noqa: A001 - mirrors builtins.open on purpose: edgemed.runtime.open(...)
    source: Artifact | str | os.PathLike[str],
    *,
    backend: str | None = None,
    options: Mapping[str, Any] | None = None,
    preprocess: PreprocessSpec | None = None,
    **bundle_args: Any,
) -> Session:
    """Open a model for inference.

    Args:
        source: an Artifact, an artifact directory, a bundle (directory, or archive: a tar
            file, whatever its suffix; a ``.edgemed`` file is always read as one), or a plain
            ``.onnx`` file.
        backend: override the artifact's backend.
        options: backend options (threads...), merged over the artifact's.
        preprocess: PreprocessSpec for a plain ONNX file (artifacts carry their own).
        bundle_args: for bundles: ``trust`` (publisher public key), ``device_key``, ``state_dir``...
    Returns:
        a Session.
    Raises:
        InvalidInputError: the source does not exist or is not a model.
        BundleError (and subclasses): a bundle that does not verify.
        BackendError / MissingDependencyError: the backend cannot run it.
    """
    if isinstance(source, Artifact):
        return open_artifact(source, backend=backend, options=options)
    p = Path(source)
    if not p.exists():
        raise InvalidInputError(
            "path does not exist", expected="an artifact directory, a bundle or an .onnx file",
            found=str(p), fix="check the path", code="not-found",
        )
    if p.is_dir() and (p / ARTIFACT_FILE).is_file():
        return open_artifact(Artifact.load(p), backend=backend, options=options)
    if is_bundle(p):
        from .bundle import open_bundle

        return open_bundle(p, backend=backend, options=options, **bundle_args)
    if p.is_file() and p.suffix == ".onnx":
        return _open_plain_onnx(p, backend or "onnxruntime", options or {}, preprocess)
    raise InvalidInputError(
        "not a model", expected="an artifact directory, a bundle (.edgemed) or an .onnx file",
        found=str(p), fix="pass the output of `edgemed build` or `edgemed bundle`",
        code="not-a-model",
    )


def _open_plain_onnx(
    p: Path, backend: str, options: Mapping[str, Any], preprocess: PreprocessSpec | None
) -> Session:
    be = get_backend(backend)
    bs = be.open(p.read_bytes(), IOSpec(), options)
    # describe the IO from the loaded graph itself
    import onnxruntime as ort

    sess = ort.InferenceSession(str(p), providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    shape = tuple(d if isinstance(d, int) and d > 0 else 1 for d in inp.shape)
    io = IOSpec(
        input_name=inp.name, input_shape=shape,
        output_names=tuple(o.name for o in sess.get_outputs()),
        dynamic_batch=not isinstance(inp.shape[0], int),
    )
    return Session(bs, io, preprocess or PreprocessSpec(size=shape[-2:]), backend,
                   info={"format": "onnx", "path": str(p)})
