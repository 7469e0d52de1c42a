"""Splitting an ONNX model into a small graph and one aligned weights blob before sealing.

onnxruntime can take initializers from memory (``SessionOptions.add_external_initializers``),
so a device decrypts the weights once into an aligned buffer and hands it over without
serialising a 45 MB protobuf through Python (the bundle format's ``weights`` payload role;
docs/bundle-format.md). The split is exact: every tensor keeps its bytes, dtype and shape.
"""

from __future__ import annotations

from typing import Any

from edgemed_runtime.sdk import ALIGN, pack_weights

from ..errors import InvalidInputError

MIN_TENSOR_BYTES = 1024


def split_onnx(model_bytes: bytes, *, weights_name: str) -> tuple[bytes, bytes]:
    """``(graph bytes, weights payload)`` for an ONNX model.

    Initializers of at least MIN_TENSOR_BYTES with a numeric dtype move to the weights payload
    (``pack_weights`` layout, each tensor ALIGN-byte aligned); the graph marks them external
    (location ``weights_name``). Small or non-numeric tensors stay inline.

    Raises:
        InvalidInputError(code="bad-model"): the bytes are not an ONNX model.
    """
    import onnx
    from onnx import numpy_helper

    try:
        m = onnx.load_model_from_string(model_bytes)
    except Exception as exc:  # onnx raises DecodeError / ValueError
        raise InvalidInputError("model is not a valid ONNX file", found=str(exc)[:200],
                                code="bad-model") from None
    tensors: list[tuple[str, Any]] = []
    for t in m.graph.initializer:
        if t.data_location == onnx.TensorProto.EXTERNAL:
            raise InvalidInputError("model already uses external data", found=t.name,
                                    fix="save the artifact with all tensors inline",
                                    code="bad-model")
        arr = numpy_helper.to_array(t)
        if arr.nbytes < MIN_TENSOR_BYTES or arr.dtype.kind not in "biuf":
            continue
        tensors.append((t.name, arr))
    weights, offsets = pack_weights(tensors)
    by_name = dict(offsets)
    for t in m.graph.initializer:
        if t.name not in by_name:
            continue
        off, length = by_name[t.name]
        t.ClearField("raw_data")
        for f in ("float_data", "int32_data", "int64_data", "double_data", "uint64_data"):
            t.ClearField(f)
        t.data_location = onnx.TensorProto.EXTERNAL
        del t.external_data[:]
        for k, v in (("location", weights_name), ("offset", str(off)), ("length", str(length))):
            e = t.external_data.add()
            e.key, e.value = k, v
    return m.SerializeToString(), weights


__all__ = ["ALIGN", "MIN_TENSOR_BYTES", "split_onnx"]
