"""The ``weights`` payload: a model's large tensors in one aligned blob, and opening an ONNX
graph plus such a blob from memory through the backend itself (no protobuf round trip, no
file): the backend's own session and provider options apply, as for any other model.

Layout (all integers big-endian)::

    b"EDGEMEDW" | uint32 version (1) | uint32 n | n bytes of JSON index | zero padding to 64
    data: each tensor's raw little-endian bytes at a 64-byte aligned offset (from data start)

Index entries: exactly ``{"name", "dtype" (numpy name), "shape", "offset", "length"}``
(checked strictly: exact types, bounded sizes; see ``unpack_weights``).
"""

from __future__ import annotations

import json
import math
import struct
import threading
from typing import Any, Iterable, Mapping

import numpy as np

from .._memory import zero
from ..backends.base import Backend, BackendSession
from ..errors import BackendError, IntegrityError
from ..iospec import IOSpec
from .format import load_json

MAGIC = b"EDGEMEDW"
VERSION = 1
ALIGN = 64
_DTYPES = ("float32", "float16", "float64", "int8", "uint8", "int16", "uint16", "int32",
           "uint32", "int64", "uint64", "bool")
_KEYS = frozenset(("name", "dtype", "shape", "offset", "length"))
MAX_TENSORS = 1 << 20  # index entries
MAX_RANK = 32  # dimensions of one tensor
MAX_NAME = 4096  # characters of a tensor name
MAX_INDEX_BYTES = 64 << 20  # the JSON index


def _pad(n: int) -> int:
    return -n % ALIGN


def pack_weights(tensors: Iterable[tuple[str, np.ndarray]]) -> tuple[bytes, list[tuple[str, tuple[int, int]]]]:
    """Pack ``(name, array)`` pairs; return the payload and ``[(name, (offset, length))]``."""
    index, chunks, offsets, pos = [], [], [], 0
    for name, arr in tensors:
        a = np.ascontiguousarray(arr)
        if a.dtype.name not in _DTYPES:
            raise ValueError(f"unsupported dtype {a.dtype} for {name}")
        raw = a.astype(a.dtype.newbyteorder("<"), copy=False).tobytes()
        index.append({"name": name, "dtype": a.dtype.name, "shape": list(a.shape),
                      "offset": pos, "length": len(raw)})
        offsets.append((name, (pos, len(raw))))
        chunks.append(raw + b"\0" * _pad(len(raw)))
        pos += len(raw) + _pad(len(raw))
    head = json.dumps(index, separators=(",", ":"), sort_keys=True).encode()
    header = MAGIC + struct.pack(">II", VERSION, len(head)) + head
    return header + b"\0" * _pad(len(header)) + b"".join(chunks), offsets


def _bad(msg: str, expected: str | None = None) -> IntegrityError:
    return IntegrityError(f"weights payload is invalid: {msg}", expected=expected,
                          fix="the publisher sealed a malformed weights payload: re-seal the "
                          "bundle (edgemed bundle)", code="weights-invalid")


def _exact_int(v: Any, lo: int, hi: int) -> bool:
    return type(v) is int and lo <= v <= hi


def unpack_weights(buf: Any) -> list[tuple[str, np.ndarray]]:
    """Zero-copy ``(name, array view)`` pairs over a decrypted weights payload.

    The index is strict JSON (``format.load_json``: finite numbers, no key twice, depth <= 4)
    of <= MAX_TENSORS entries, each exactly ``{"name": str (1..4096), "dtype": one of _DTYPES,
    "shape": [int >= 0, ...] (rank <= 32), "offset": int (64-aligned), "length": int}`` with
    names unique, ``length`` = elements x item size, and every tensor inside the data.

    Raises:
        IntegrityError(code="weights-invalid"): bad magic, version, index or bounds.
    """
    if len(buf) < 16 or bytes(buf[:8]) != MAGIC:
        raise _bad("bad magic", expected=f"{MAGIC!r} then version {VERSION}")
    version, n = struct.unpack(">II", bytes(buf[8:16]))
    if version != VERSION or n > min(len(buf) - 16, MAX_INDEX_BYTES):
        raise _bad(f"version {version}, index of {n} bytes",
                   expected=f"version {VERSION}, an index inside the payload")
    try:
        index = load_json(memoryview(buf).cast("B")[16:16 + n], max_depth=4)
    except ValueError as exc:
        raise _bad(f"index is not strict JSON ({str(exc)[:80]})") from None
    start = 16 + n + _pad(16 + n)
    size = len(buf) - start
    if type(index) is not list or len(index) > MAX_TENSORS:
        raise _bad("index is not a list", expected=f"a list of <= {MAX_TENSORS} entries")
    out, names = [], set()
    for e in index:
        if type(e) is not dict or e.keys() != _KEYS:
            raise _bad("index entry malformed", expected="{" + ", ".join(sorted(_KEYS)) + "}")
        name, dtype, shape, off, length = (e[k] for k in ("name", "dtype", "shape", "offset",
                                                          "length"))
        if type(name) is not str or not 0 < len(name) <= MAX_NAME or name in names \
                or dtype not in _DTYPES or type(shape) is not list or len(shape) > MAX_RANK \
                or not all(_exact_int(d, 0, size) for d in shape):
            raise _bad("index entry malformed", expected="a unique name, a known dtype and a "
                       f"shape of <= {MAX_RANK} non-negative integers")
        if not _exact_int(off, 0, size) or off % ALIGN or not _exact_int(length, 0, size - off):
            raise _bad(f"tensor {name[:64]!r} out of bounds",
                       expected=f"a {ALIGN}-aligned offset, within {size} data bytes")
        dt = np.dtype(dtype).newbyteorder("<")
        count = math.prod(shape)
        if count * dt.itemsize != length:
            raise _bad(f"tensor {name[:64]!r} length does not match its shape")
        names.add(name)
        out.append((name, np.frombuffer(buf, dtype=dt, count=count, offset=start + off).reshape(shape)))
    return out


class WeightsSession(BackendSession):
    """A backend session over in-memory weights; ``close`` waits for runs in progress, closes
    the backend's session, then zeroes the decrypted buffers it read in place."""

    def __init__(self, inner: BackendSession, buffers: list[Any]) -> None:
        self._inner = inner
        self._buffers = buffers
        self.input_names = inner.input_names
        self.output_names = inner.output_names
        self.details = dict(inner.details)
        self._cond = threading.Condition()
        self._running = 0
        self._closed = False

    def run(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """The backend session's ``run``.

        Raises:
            BackendError(code="closed"): the session is closed; the backend's own errors.
        """
        with self._cond:
            if self._closed:
                raise BackendError("the session is closed", fix="open the bundle again",
                                   code="closed")
            self._running += 1
        try:
            return self._inner.run(feeds)
        finally:
            with self._cond:
                self._running -= 1
                self._cond.notify_all()

    def close(self) -> None:
        """Close once; the buffers are wiped after the last run in progress returns."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            while self._running:
                self._cond.wait()
        try:
            self._inner.close()
        finally:
            for b in self._buffers:
                zero(b)


def open_with_weights(backend: Backend, graph: Any, weights: Any, io: IOSpec,
                      options: Mapping[str, Any]) -> WeightsSession:
    """Open an ONNX graph whose external initializers live in the ``weights`` payload, through
    ``backend.open(..., external=)`` (the same code path, session and provider options as any
    model of that backend). Both buffers stay referenced by the session (the backend reads
    the tensors in place) and are zeroed when it closes, or here when opening fails.

    Raises:
        IntegrityError(code="weights-invalid"): a malformed weights payload.
        BackendError(code="model-load-failed"): the backend refuses the model.
    """
    try:
        tensors = unpack_weights(weights)
        inner = backend.open(bytes(graph), io, options, external=tensors)  # type: ignore[call-arg]
    except BaseException:
        zero(graph)
        zero(weights)
        raise
    return WeightsSession(inner, [graph, weights])
