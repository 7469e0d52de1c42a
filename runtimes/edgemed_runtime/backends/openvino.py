"""OpenVINO backend: OpenVINO IR (NNCF INT8 or FP32) and ONNX / QDQ ONNX, read from memory.

Models never touch disk in plaintext: an IR artifact is one "packed IR" blob (XML + weights, see
``pack_ir``) read with ``Core.read_model(model=xml, weights=Tensor)``; ONNX bytes go through
``ov.convert_model(BytesIO)`` (compiling ORT's QDQ DenseNet-121 through ``Core.read_model``
crashed the process on this project's machine while ``convert_model`` worked). The model cache
(CACHE_DIR) is always off. ``INFERENCE_PRECISION_HINT`` is ``f32`` unless the options say
otherwise: on CPUs with AVX-512 BF16 (or AMX) OpenVINO silently runs FP32 layers in bf16
without it, which is not the precision the accuracy gate validated.

Batch specialisation: a model whose batch dimension is dynamic is compiled for a static batch
(``static_batch``, default 1) and, only when a call brings another batch size, once more with the
dynamic shape. OpenVINO's CPU plugin plans memory and picks kernels per shape at compile time
with static shapes; measured on this project's 2-core AVX-512 VNNI machine, NNCF INT8
DenseNet-121 ran in 3.47-3.58 ms static against 3.92-4.06 ms dynamic (ResNet-18, compute bound:
no difference). The session keeps the ``ov.Model`` (in memory) for that second compile;
``static_batch = 0`` compiles the dynamic model only and keeps nothing else.
"""

from __future__ import annotations

import io as _io
import struct
from typing import Any, Callable, Mapping

import numpy as np

from ..errors import BackendError, InvalidInputError
from ..iospec import IOSpec
from .base import RUN_FIX, Backend, BackendSession, library_error

IR_MAGIC = b"EMOVIR1\0"
_PRECISIONS = {"f32": "f32", "fp32": "f32", "bf16": "bf16", "f16": "f16", "fp16": "f16"}
_HINTS = ("LATENCY", "THROUGHPUT", "CUMULATIVE_THROUGHPUT")


def pack_ir(xml: bytes, weights: bytes) -> bytes:
    """Pack an IR's XML and weights into one blob: magic, u64 xml length, xml, weights."""
    return IR_MAGIC + struct.pack("<Q", len(xml)) + xml + weights


def unpack_ir(blob: bytes) -> tuple[bytes, bytes]:
    """Split a packed IR into (xml, weights).

    Raises:
        InvalidInputError: the blob is not a packed IR.
    """
    head = len(IR_MAGIC) + 8
    if len(blob) < head or blob[: len(IR_MAGIC)] != IR_MAGIC:
        raise InvalidInputError("not a packed OpenVINO IR", expected="edgemed packed IR (EMOVIR1)",
                                found=f"{len(blob)} bytes starting {blob[:8]!r}", code="bad-model")
    (n,) = struct.unpack("<Q", blob[len(IR_MAGIC):head])
    if head + n > len(blob):
        raise InvalidInputError("truncated packed OpenVINO IR", expected=f">= {head + n} bytes",
                                found=f"{len(blob)} bytes", code="bad-model")
    return blob[head:head + n], blob[head + n:]


def compile_properties(options: Mapping[str, Any]) -> dict[str, Any]:
    """OpenVINO compile properties from backend options.

    Keys: ``threads`` (INFERENCE_NUM_THREADS, 0 = library default), ``precision``
    (f32 (default) / bf16 / f16 / auto = no hint), ``performance_hint`` (LATENCY default),
    ``num_streams`` (default 1). The model cache is always off.

    Raises:
        BackendError: an unknown precision or performance hint.
    """
    props: dict[str, Any] = {"CACHE_DIR": ""}
    prec = str(options.get("precision", "f32")).lower()
    if prec != "auto":
        if prec not in _PRECISIONS:
            raise BackendError("unknown OpenVINO precision", expected="f32, bf16, f16 or auto",
                               found=prec, code="bad-option")
        props["INFERENCE_PRECISION_HINT"] = _PRECISIONS[prec]
    hint = str(options.get("performance_hint", "LATENCY")).upper()
    if hint not in _HINTS:
        raise BackendError("unknown OpenVINO performance hint", expected=", ".join(_HINTS),
                           found=hint, code="bad-option")
    props["PERFORMANCE_HINT"] = hint
    threads = int(options.get("threads", 0) or 0)
    if threads > 0:
        props["INFERENCE_NUM_THREADS"] = threads
    props["NUM_STREAMS"] = int(options.get("num_streams", 1) or 1)
    return props


def static_batch(options: Mapping[str, Any]) -> int:
    """The batch size to specialise for (``static_batch`` option; 0 = none, default 1).

    Raises:
        BackendError: not a non-negative integer.
    """
    raw = options.get("static_batch", 1)
    try:
        value = int(raw)
    except (TypeError, ValueError):
        value = -1
    if isinstance(raw, bool) or value < 0:
        raise BackendError("bad OpenVINO static_batch option", expected="an integer >= 0 (0 = off)",
                           found=repr(raw), code="bad-option")
    return value


def specialise_batch(model: Any, batch: int) -> dict[int, Any] | None:
    """Reshape ``model`` in place to a static ``batch`` when every input's only dynamic dimension
    is the first. Returns the original partial shapes (input index -> PartialShape) to undo it,
    or None when nothing was changed.
    """
    import openvino as ov

    if batch <= 0:
        return None
    original: dict[int, Any] = {}
    new: dict[int, Any] = {}
    for k, port in enumerate(model.inputs):
        ps = port.get_partial_shape()
        if ps.rank.is_dynamic or len(ps) == 0:
            return None
        if any(d.is_dynamic for d in list(ps)[1:]):
            return None
        if ps[0].is_dynamic:
            original[k] = ps
            new[k] = ov.PartialShape([batch] + [d.get_length() for d in list(ps)[1:]])
    if not new:
        return None
    model.reshape(new)
    return original


def read_model(core: Any, model: bytes) -> Any:
    """An ``ov.Model`` from packed-IR or ONNX bytes, in memory."""
    import openvino as ov

    if model[: len(IR_MAGIC)] == IR_MAGIC:
        xml, weights = unpack_ir(model)
        return core.read_model(model=xml, weights=ov.Tensor(np.frombuffer(weights, np.uint8)))
    return ov.convert_model(_io.BytesIO(model))


def _type_name(t: Any) -> str:
    """``ov.Type`` -> its short name (``f32``, ``bf16``...)."""
    return t.to_string() if hasattr(t, "to_string") else str(t)


class _OvSession(BackendSession):
    """One compiled model, or a static-batch one plus a dynamic one compiled on first need."""

    def __init__(self, compiled: Any, *, batch: int = 0,
                 dynamic: Callable[[], Any] | None = None) -> None:
        self._compiled = compiled
        self._req = compiled.create_infer_request()
        self._batch = batch
        self._make_dynamic = dynamic
        self._dynamic: tuple[Any, Any] | None = None
        self.input_names = tuple(next(iter(i.get_names()), f"input{k}")
                                 for k, i in enumerate(compiled.inputs))
        self.output_names = tuple(next(iter(o.get_names()), f"output{k}")
                                  for k, o in enumerate(compiled.outputs))
        self.details = {
            "inference_precision": _type_name(compiled.get_property("INFERENCE_PRECISION_HINT")),
            "execution_devices": list(compiled.get_property("EXECUTION_DEVICES")),
            "static_batch": batch,
        }

    def _pick(self, arrays: list[np.ndarray]) -> tuple[Any, Any]:
        """The (compiled model, request) for this call's batch size."""
        if not self._batch or all(a.ndim and a.shape[0] == self._batch for a in arrays):
            return self._compiled, self._req
        if self._dynamic is None:
            if self._make_dynamic is None:
                raise BackendError("the session is closed", code="closed")
            compiled = self._make_dynamic()
            self._dynamic = (compiled, compiled.create_infer_request())
            self._make_dynamic = None
            self.details["dynamic_compiled"] = True
        return self._dynamic

    def run(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        arrays = [np.ascontiguousarray(v) for v in feeds.values()]
        try:
            compiled, req = self._pick(arrays)
            res = req.infer(arrays)
            return [np.array(res[o]) for o in compiled.outputs]
        except BackendError:
            raise
        except Exception as exc:  # OpenVINO raises RuntimeError with its own text
            raise library_error("OpenVINO failed to run the model", exc, fix=RUN_FIX) from None

    def close(self) -> None:
        self._req = None
        self._compiled = None
        self._dynamic = None
        self._make_dynamic = None


class OpenVinoBackend(Backend):
    """Runs ``openvino-ir`` (packed), ``onnx`` and ``onnx-qdq`` artifacts with OpenVINO."""

    name = "openvino"
    formats = ("openvino-ir", "onnx", "onnx-qdq")
    requires = ("openvino",)
    modules = ("openvino",)

    def open(self, model: bytes, io: IOSpec, options: Mapping[str, Any]) -> BackendSession:
        import openvino as ov

        props = compile_properties(options)
        batch = static_batch(options)
        device = str(options.get("device", "CPU"))
        core = ov.Core()
        try:
            ov_model = read_model(core, model)
            original = specialise_batch(ov_model, batch)
            compiled = core.compile_model(ov_model, device, props)
        except InvalidInputError:
            raise
        except Exception as exc:
            raise library_error(
                "OpenVINO cannot load the model", exc, expected="packed OpenVINO IR or ONNX bytes",
                code="model-load-failed",
                fix=f"check that device {device!r} exists (Core().available_devices)",
            ) from None
        if original is None:
            return _OvSession(compiled)

        def dynamic() -> Any:
            ov_model.reshape(original)  # back to the dynamic batch, then compile once
            return core.compile_model(ov_model, device, props)

        return _OvSession(compiled, batch=batch, dynamic=dynamic)
