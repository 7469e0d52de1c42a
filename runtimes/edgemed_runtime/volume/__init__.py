"""3D volumes on the device: the ``Volume`` type and (see submodules) its preprocessing."""

from .core import SliceRef, Volume
from .placement import Placement
from .spec import VolumeSpec

__all__ = ["Placement", "SliceRef", "Volume", "VolumeSpec"]
