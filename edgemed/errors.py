"""The edgemed exception tree: the runtime's errors plus the build-side ones.

    EdgemedError
    ├── InvalidInputError        bad path / file / shape / DICOM          (CLI exit 2)
    ├── MissingDependencyError   an optional package is not installed     (CLI exit 2)
    ├── BackendError             a runtime backend failed                 (CLI exit 2)
    ├── ProfileError             an invalid target profile                (CLI exit 2)
    ├── ExportError              a model does not export / diverges       (CLI exit 2)
    ├── CalibrationError         empty / mis-shaped / non-finite data     (CLI exit 2)
    ├── GateError                the accuracy gate failed                 (CLI exit 1)
    └── BundleError > IntegrityError, RollbackError, ExpiredError, DeviceMismatchError

Each error's ``code`` is one of ``edgemed_runtime.error_codes.ERROR_CODES`` (docs/error-codes.md).
"""

from __future__ import annotations

from typing import Any, Mapping

from edgemed_runtime import (
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


class ExportError(EdgemedError):
    """A model could not be exported to ONNX, or its ONNX output diverges from PyTorch."""

    default_code = "export-failed"


class CalibrationError(EdgemedError):
    """The calibration data is empty, mis-shaped or not finite."""

    default_code = "calibration"


class GateError(EdgemedError):
    """The compressed model failed the accuracy gate; ``report`` holds the measured figures."""

    default_code = "gate-failed"
    exit_code = 1

    def __init__(self, message: str, *, report: Mapping[str, Any] | None = None, **kw: Any) -> None:
        self.report = dict(report or {})
        super().__init__(message, **kw)


__all__ = [
    "BackendError", "BundleError", "CalibrationError", "DeviceMismatchError", "EdgemedError",
    "ExpiredError", "ExportError", "GateError", "IntegrityError", "InvalidInputError",
    "MissingDependencyError", "ProfileError", "RollbackError",
]
