"""Inference over whole inputs or sliding windows (numpy only): ``InferenceSpec``,
``sliding_window`` (MONAI ``sliding_window_inference`` semantics)."""

from __future__ import annotations

from .sliding_window import sliding_window
from .spec import InferenceSpec

__all__ = ["InferenceSpec", "sliding_window"]
