"""``edgemed.runtime``: the device runtime's API, re-exported (``edgemed.runtime.open(art)``)."""

from edgemed_runtime import Session, TensorInfo, open, open_artifact

__all__ = ["Session", "TensorInfo", "open", "open_artifact"]
