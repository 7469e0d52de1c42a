"""The ``weights`` payload: a model's large tensors in one aligned blob, and loading an ONNX
graph plus such a blob into onnxruntime from memory (no protobuf round trip, no file).

Layout (all integers big-endian)::

    b"EDGEMEDW" | uint32 version (1) | uint32 n | n bytes of JSON index | zero padding to 64
    data: each tensor's raw little-endian bytes at a 64-byte aligned offset (from data start)

Index entries: ``{"name", "dtype" (numpy name), "shape", "offset", "length"}``.
"""

from __future__ import annotations

import json
import struct
from typing import Any, Iterable, Mapping

import numpy as np

from ..backends.base import BackendSession
from ..errors import BackendError, IntegrityError

MAGIC = b"EDGEMEDW"
VERSION = 1
ALIGN = 64
_DTYPES = ("float32", "float16", "float64", "int8", "uint8", "int16", "uint16", "int32",
           "uint32", "int64", "uint64", "bool")


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


def _bad(msg: str) -> IntegrityError:
    return IntegrityError(f"weights payload is invalid: {msg}", code="weights-invalid")


def unpack_weights(buf: bytearray) -> list[tuple[str, np.ndarray]]:
    """Zero-copy ``(name, array view)`` pairs over a decrypted weights payload.

    Raises:
        IntegrityError(code="weights-invalid"): bad magic, version, index or bounds.
    """
    if len(buf) < 16 or bytes(buf[:8]) != MAGIC:
        raise _bad("bad magic")
    version, n = struct.unpack(">II", bytes(buf[8:16]))
    if version != VERSION or n > len(buf) - 16:
        raise _bad(f"version {version}, index of {n} bytes")
    try:
        index = json.loads(bytes(buf[16:16 + n]))
    except (UnicodeDecodeError, ValueError):
        raise _bad("index is not JSON") from None
    start = 16 + n + _pad(16 + n)
    size = len(buf) - start
    out = []
    if not isinstance(index, list):
        raise _bad("index is not a list")
    for e in index:
        try:
            name, dtype, shape = str(e["name"]), str(e["dtype"]), [int(d) for d in e["shape"]]
            off, length = int(e["offset"]), int(e["length"])
        except (KeyError, TypeError, ValueError):
            raise _bad("index entry malformed") from None
        if dtype not in _DTYPES or any(d < 0 for d in shape) or off % ALIGN or off < 0 \
                or off + length > size:
            raise _bad(f"tensor {name[:64]!r} out of bounds")
        dt = np.dtype(dtype).newbyteorder("<")
        count = int(np.prod(shape, dtype=np.int64)) if shape else 1
        if count * dt.itemsize != length:
            raise _bad(f"tensor {name[:64]!r} length does not match its shape")
        out.append((name, np.frombuffer(buf, dtype=dt, count=count, offset=start + off).reshape(shape)))
    return out


class MemoryOrtSession(BackendSession):
    """An onnxruntime session over in-memory initializers; ``close`` wipes the plaintext."""

    def __init__(self, sess: Any, keep: tuple[Any, ...], buffers: list[bytearray]) -> None:
        self._sess = sess
        self._keep = keep
        self._buffers = buffers
        self.input_names = tuple(i.name for i in sess.get_inputs())
        self.output_names = tuple(o.name for o in sess.get_outputs())

    def run(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        if self._sess is None:
            raise BackendError("session is closed", fix="open the model again")
        try:
            return list(self._sess.run(None, dict(feeds)))
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidArgument types
            raise BackendError("onnxruntime failed to run the model",
                               found=f"{type(exc).__name__}: {exc}"[:500],
                               fix="check the input shape and dtype against session.inputs") from None

    def close(self) -> None:
        from .loader import wipe

        self._sess = None
        self._keep = ()
        wipe({str(i): b for i, b in enumerate(self._buffers)})
        self._buffers = []


def open_ort_from_memory(graph: bytearray, weights: bytearray,
                         options: Mapping[str, Any]) -> MemoryOrtSession:
    """A BackendSession for an ONNX graph whose external initializers live in ``weights``.

    The buffers stay referenced by the session (onnxruntime reads them in place) and are
    zeroed when it closes.

    Raises:
        BackendError(code="model-load-failed"): onnxruntime refuses the model.
    """
    import onnxruntime as ort

    from ..backends.onnxruntime import pick_providers, session_options

    tensors = unpack_weights(weights)
    values = [ort.OrtValue.ortvalue_from_numpy(a) for _, a in tensors]
    so = session_options(options)
    so.add_external_initializers([n for n, _ in tensors], values)
    providers = pick_providers(options)
    try:
        sess = ort.InferenceSession(bytes(graph), sess_options=so, providers=providers)
    except Exception as exc:
        raise BackendError("onnxruntime cannot load the model", expected="a valid ONNX model",
                           found=f"{type(exc).__name__}: {exc}"[:500],
                           code="model-load-failed") from None
    return MemoryOrtSession(sess, (tensors, values), [graph, weights])
