"""Buffers for decrypted data: allocation and zeroing in place.

Imports nothing of edgemed_runtime, so any module (bundle decryption, inflation, weights
sessions) can use it without an import cycle.
"""

from __future__ import annotations

import ctypes
from typing import Any, Mapping

LARGE = 1 << 20  # from this size on, buffers are numpy arrays (no zero-fill on allocation)


def alloc(n: int) -> Any:
    """A writable buffer of ``n`` bytes: a bytearray, or an uninitialised uint8 numpy array
    from LARGE bytes up (the caller overwrites every byte). Zero it with ``zero`` after use."""
    if n >= LARGE:
        import numpy as np

        return np.empty(n, dtype=np.uint8)
    return bytearray(n)


def zero(buf: Any) -> None:
    """Overwrite one writable buffer (bytearray, uint8 array, byte memoryview) with zeros."""
    n = len(buf)
    if n:
        ctypes.memset((ctypes.c_char * n).from_buffer(buf), 0, n)


def wipe(buffers: Mapping[str, Any]) -> None:
    """``zero`` every buffer of ``buffers`` (e.g. ``{payload name: plaintext}``)."""
    for b in buffers.values():
        zero(b)
