"""``edgemed.runtime``: the device runtime's API (``edgemed.runtime.open(art)``).

``Session``, ``TensorInfo`` and ``open_artifact`` are the runtime's, re-exported. ``open`` is the
runtime's ``open`` that also takes a file inside an artifact folder for the folder: the README's
``out/model.onnx`` opens ``out/`` whatever the chosen artifact's file is (``model.ovir``,
``model.ort``...), with a log line naming the folder to pass.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from edgemed_runtime import Artifact, Session, TensorInfo, open_artifact
from edgemed_runtime import open as _open_runtime
from edgemed_runtime.sdk import ARTIFACT_FILE

__all__ = ["Session", "TensorInfo", "open", "open_artifact", "resolve_artifact"]

log = logging.getLogger("edgemed")


def resolve_artifact(path: str | os.PathLike[str]) -> tuple[Path, str | None]:
    """The path to open for ``path``, and a note when it is not ``path`` itself.

    A file (or a missing file) whose folder holds ``artifact.json`` stands for that folder; the
    note names the artifact's real model file when ``path`` does not exist. Anything else is
    returned as given (None note).
    """
    p = Path(path)
    folder = p.parent
    if p.is_dir() or not (folder / ARTIFACT_FILE).is_file():
        return p, None
    if p.is_file():
        return folder, None
    try:
        model_file = Artifact.load(folder).model_file
    except Exception:  # the folder's artifact.json is broken: open() will say so
        model_file = "?"
    return folder, (f"{p} does not exist: the artifact in {folder} holds {model_file}; "
                    f"opened the artifact folder (pass {folder} instead)")


def open(source: Any, **kwargs: Any) -> Session:  # noqa: A001 - edgemed.runtime.open(...)
    """``edgemed_runtime.open(source, **kwargs)``, a file inside an artifact folder taken for
    the folder (see ``resolve_artifact``). Raises what ``edgemed_runtime.open`` raises."""
    if isinstance(source, (str, os.PathLike)):
        source, note = resolve_artifact(source)
        if note:
            log.warning(note)
    return _open_runtime(source, **kwargs)
