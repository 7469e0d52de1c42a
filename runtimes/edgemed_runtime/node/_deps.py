"""Lazy import of the ``node`` extra (pynetdicom): a clear error when it is absent."""

from __future__ import annotations

import importlib
from types import ModuleType

from ..errors import MissingDependencyError

EXTRA_HINT = "pip install 'edgemed-runtime[node]'"


def pynetdicom() -> ModuleType:
    """Import and return pynetdicom.

    Raises:
        MissingDependencyError: not installed (the fix names the ``node`` extra).
    """
    try:
        return importlib.import_module("pynetdicom")
    except ImportError:
        raise MissingDependencyError("the DICOM node needs the pynetdicom package",
                                     expected="pynetdicom installed (the runtime's 'node' extra)",
                                     found="not installed", fix=EXTRA_HINT) from None
