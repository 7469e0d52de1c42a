"""Lazy imports of the ``outputs`` extra (highdicom, nibabel): a clear error when absent."""

from __future__ import annotations

import importlib
from types import ModuleType

from ..errors import MissingDependencyError

EXTRA_HINT = "pip install 'edgemed-runtime[outputs]'"


def require(module: str) -> ModuleType:
    """Import ``module`` (``"highdicom"``, ``"nibabel"``) and return it.

    Raises:
        MissingDependencyError: the package is not installed (the fix names the extra).
    """
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingDependencyError(
            f"writing this output needs the {module.split('.')[0]} package",
            expected=f"{module.split('.')[0]} installed (the runtime's 'outputs' extra)",
            found="not installed", fix=EXTRA_HINT) from None
