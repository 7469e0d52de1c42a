"""edgemed_runtime: open edgemed artifacts and bundles and run them, without torch/onnx/nncf.

    import edgemed_runtime as rt
    with rt.open("out/model") as sess:
        probs = sess.predict("study/IM0001.dcm")
"""

from __future__ import annotations

import os

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

from .api import is_bundle, open, open_artifact  # noqa: E402
from .artifact import Artifact  # noqa: E402
from .backends import Backend, BackendSession, register_backend  # noqa: E402
from .errors import (  # noqa: E402
    BackendError,
    BundleError,
    DeviceMismatchError,
    EdgemedError,
    ExpiredError,
    IntegrityError,
    InvalidInputError,
    MissingDependencyError,
    ProfileError,
    RollbackError,
)
from .inference import InferenceSpec  # noqa: E402
from .outputs import nifti_bytes, nifti_image, seg_bytes, seg_dataset, write_nifti, write_seg  # noqa: E402
from .iospec import IOSpec  # noqa: E402
from .preprocess import PreprocessSpec  # noqa: E402
from .session import Session, TensorInfo  # noqa: E402
from .dicom.series import read_series  # noqa: E402
from .volume.core import SliceRef, Volume  # noqa: E402
from .tasks import SegmentationResult, TaskSpec  # noqa: E402
from .volume import VolumeSpec  # noqa: E402

__version__ = "0.1.0"

# the stable API (docs/api.md); every other name of the package is private
__all__ = [
    "Artifact", "Backend", "BackendError", "BackendSession", "BundleError",
    "DeviceMismatchError", "EdgemedError", "ExpiredError", "IOSpec", "InferenceSpec",
    "IntegrityError",
    "InvalidInputError", "MissingDependencyError", "PreprocessSpec", "ProfileError",
    "RollbackError", "Session", "SliceRef", "TensorInfo", "Volume", "is_bundle", "open",
    "open_artifact", "read_series",
    "register_backend", "SegmentationResult", "TaskSpec", "VolumeSpec", "__version__",
    "nifti_bytes", "nifti_image", "seg_bytes", "seg_dataset", "write_nifti", "write_seg",
]
