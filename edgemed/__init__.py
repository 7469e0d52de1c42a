"""edgemed: from a trained medical-imaging model to verified INT8 artifacts and bundles.

    import edgemed
    art = edgemed.build(model, example_input, calibration=ds, validation=val, target="cpu-x86")
    sess = edgemed.runtime.open(art)
    probs = sess.predict("study/IM0001.dcm")
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

from edgemed_runtime import Artifact, IOSpec, PreprocessSpec, Session  # noqa: E402

from . import errors, runtime  # noqa: E402
from .errors import (  # noqa: E402
    CalibrationError,
    EdgemedError,
    ExportError,
    GateError,
    InvalidInputError,
    ProfileError,
)

if TYPE_CHECKING:
    from .targets import TargetProfile

__version__ = "0.1.0"


def build(*args: Any, **kwargs: Any) -> Artifact:
    """Build the best artifact for a target; see :func:`edgemed.pipeline.build`."""
    from .pipeline import build as _build

    return _build(*args, **kwargs)


def load_target(name_or_path: str | os.PathLike[str]) -> "TargetProfile":
    """Load and check a target profile; see :func:`edgemed.targets.load_target`."""
    from .targets import load_target as _load

    return _load(name_or_path)


# the stable API (docs/api.md); every other name of the package is private
__all__ = [
    "Artifact", "CalibrationError", "EdgemedError", "ExportError", "GateError", "IOSpec",
    "InvalidInputError", "PreprocessSpec", "ProfileError", "Session", "build", "errors",
    "load_target", "runtime", "__version__",
]
