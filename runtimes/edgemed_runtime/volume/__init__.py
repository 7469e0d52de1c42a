"""3D volumes on the device: the ``Volume`` type and (see submodules) its preprocessing."""

from .core import SliceRef, Volume

__all__ = ["SliceRef", "Volume"]
