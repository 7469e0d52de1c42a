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
no difference). The session keeps the model bytes (not the read ``ov.Model``, which holds a
copy of the weights beside the compiled model's own: dropping it saved 19 MiB of a 3D
DenseNet-121 INT8 session, 11.6 MiB of weights) for that second compile; ``static_batch = 0``
compiles the dynamic model only and keeps nothing else.

Shape specialisation (fully convolutional models, dynamic spatial dims): sliding-window inference
feeds ROI-sized windows, ``sw_batch_size`` at a time (the last batch may be smaller), so a call
with a shape not seen before gets a static compile of its own, for at most ``static_shapes``
shapes (default 2: full batches and the last one; 0 = off); other shapes run on the dynamic
compile. Measured on the 2-core AVX2 machine (shared, interleaved runs), NNCF INT8 MONAI 3D UNet
(InstanceNorm + PReLU): a small one (8-32 channels) at 16^3 ran 2.50 ms static against 6.51 ms
dynamic; the 16-128 one at 64^3 was within noise (static 0.83x to 1.13x dynamic in four runs).
The first call of each new shape pays the compile.

Threads: ``run`` may be called from several threads at once. An ``InferRequest`` is not safe to
share (8 threads x 200 calls on one shared request, 2-core AVX2 machine: 1263-1323 of the 1600
results differed from the serial result of their own input), so each compiled model has a pool
of requests, made on first need up to ``infer_requests`` (default: the compiled model's
OPTIMAL_NUMBER_OF_INFER_REQUESTS, 1 with the LATENCY hint), each used by one call at a time;
the dynamic-batch compile happens once, under a lock (8 threads asking at once compiled it 8
times before).

Telemetry: ``import openvino`` imports ``openvino.tools.ovc``, which starts openvino_telemetry
(it writes ``~/intel/openvino_ga_cid`` and ``~/intel/stats`` and forks a process that looks up
www.google-analytics.com); the library's only off switches are ``CI=true`` (and other CI
variables) or a consent file in HOME. ``import_openvino`` imports openvino with
``openvino_telemetry`` made unimportable for that import only, so OVC binds its no-op stub:
nothing is written, forked or looked up, and the process environment is left alone.
"""

from __future__ import annotations

import io as _io
import struct
import sys
import threading
from types import ModuleType
from typing import Any, Callable, Mapping

import numpy as np

from ..errors import BackendError, InvalidInputError
from ..iospec import IOSpec
from .base import RUN_FIX, Backend, BackendSession, Pool, library_error

IR_MAGIC = b"EMOVIR1\0"
_PRECISIONS = {"f32": "f32", "fp32": "f32", "bf16": "bf16", "f16": "f16", "fp16": "f16"}
_HINTS = ("LATENCY", "THROUGHPUT", "CUMULATIVE_THROUGHPUT")


_IMPORT_LOCK = threading.Lock()


def import_openvino() -> ModuleType:
    """``openvino``, imported without its telemetry (see the module docstring).

    When openvino is not imported yet, ``sys.modules["openvino_telemetry"]`` is set to None for
    the import (Python then raises ImportError for it, and OVC falls back to its stub) and put
    back as it was afterwards. An openvino already imported by someone else is returned as is.
    """
    if "openvino" not in sys.modules:
        with _IMPORT_LOCK:
            if "openvino" not in sys.modules:
                had = "openvino_telemetry" in sys.modules
                saved = sys.modules.get("openvino_telemetry")
                sys.modules["openvino_telemetry"] = None  # type: ignore[assignment]
                try:
                    import openvino  # noqa: F401
                finally:
                    if had:
                        sys.modules["openvino_telemetry"] = saved  # type: ignore[assignment]
                    else:
                        sys.modules.pop("openvino_telemetry", None)
    import openvino

    return openvino


def pack_ir(xml: bytes, weights: bytes) -> bytes:
    """Pack an IR's XML and weights into one blob: magic, u64 xml length, xml, weights."""
    return IR_MAGIC + struct.pack("<Q", len(xml)) + xml + weights


def _ir_split(blob: bytes) -> int:
    """Where a packed IR's weights start (the XML is ``blob[len(IR_MAGIC) + 8:start]``).

    Raises:
        InvalidInputError: the blob is not a packed IR.
    """
    head = len(IR_MAGIC) + 8
    if len(blob) < head or blob[: len(IR_MAGIC)] != IR_MAGIC:
        raise InvalidInputError("not a packed OpenVINO IR", expected="edgemed packed IR (EMOVIR1)",
                                found=f"{len(blob)} bytes starting {bytes(blob[:8])!r}",
                                code="bad-model")
    (n,) = struct.unpack("<Q", blob[len(IR_MAGIC):head])
    if head + n > len(blob):
        raise InvalidInputError("truncated packed OpenVINO IR", expected=f">= {head + n} bytes",
                                found=f"{len(blob)} bytes", code="bad-model")
    return head + n


def unpack_ir(blob: bytes) -> tuple[bytes, bytes]:
    """Split a packed IR into (xml, weights) (copies; ``read_model`` reads the weights in place).

    Raises:
        InvalidInputError: the blob is not a packed IR.
    """
    start = _ir_split(blob)
    return bytes(blob[len(IR_MAGIC) + 8:start]), bytes(blob[start:])


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


def _count_option(options: Mapping[str, Any], key: str, default: int, meaning: str) -> int:
    """``options[key]`` as an integer >= 0 (``default`` when absent).

    Raises:
        BackendError: not a non-negative integer.
    """
    raw = options.get(key, default)
    try:
        value = int(raw)
    except (TypeError, ValueError):
        value = -1
    if isinstance(raw, bool) or value < 0:
        raise BackendError(f"bad OpenVINO {key} option", expected=f"an integer >= 0 ({meaning})",
                           found=repr(raw), code="bad-option")
    return value


def static_batch(options: Mapping[str, Any]) -> int:
    """The batch size to specialise for (``static_batch`` option; 0 = none, default 1).

    Raises:
        BackendError: not a non-negative integer.
    """
    return _count_option(options, "static_batch", 1, "0 = off")


def infer_requests(options: Mapping[str, Any]) -> int:
    """The most infer requests per compiled model (``infer_requests`` option; 0, the default,
    = the compiled model's OPTIMAL_NUMBER_OF_INFER_REQUESTS).

    Raises:
        BackendError: not a non-negative integer.
    """
    return _count_option(options, "infer_requests", 0, "0 = OpenVINO's optimal number")


def static_shapes(options: Mapping[str, Any]) -> int:
    """How many distinct input shapes of a dynamic-spatial model get a static compile
    (``static_shapes`` option; 0 = off, default 2).

    Raises:
        BackendError: not a non-negative integer.
    """
    return _count_option(options, "static_shapes", 2, "0 = off")


def spatial_dynamic(model: Any) -> bool:
    """Whether some input of ``model`` has a dynamic dimension after the first (its rank known)."""
    for port in model.inputs:
        ps = port.get_partial_shape()
        if ps.rank.is_static and any(d.is_dynamic for d in list(ps)[1:]):
            return True
    return False


def specialise_batch(model: Any, batch: int) -> dict[int, Any] | None:
    """Reshape ``model`` in place to a static ``batch`` when every input's only dynamic dimension
    is the first. Returns the original partial shapes (input index -> PartialShape) to undo it,
    or None when nothing was changed.
    """
    ov = import_openvino()

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
    """An ``ov.Model`` from packed-IR or ONNX bytes, in memory. The weights are copied once,
    into the model's own tensor (a view of ``model``, not a slice of it, is what is copied)."""
    ov = import_openvino()

    if model[: len(IR_MAGIC)] == IR_MAGIC:
        start = _ir_split(model)
        xml = bytes(memoryview(model)[len(IR_MAGIC) + 8:start])
        weights = np.frombuffer(model, np.uint8, offset=start)
        return core.read_model(model=xml, weights=ov.Tensor(weights))
    return ov.convert_model(_io.BytesIO(model))


def _type_name(t: Any) -> str:
    """``ov.Type`` -> its short name (``f32``, ``bf16``...)."""
    return t.to_string() if hasattr(t, "to_string") else str(t)


def _request_pool(compiled: Any, limit: int) -> Pool[Any]:
    """A pool of ``compiled``'s infer requests, at most ``limit`` (0 = OpenVINO's optimum)."""
    if limit <= 0:
        try:
            limit = int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
        except Exception:  # a device plugin without the property
            limit = 1
    return Pool(compiled.create_infer_request, limit)


class _OvSession(BackendSession):
    """One compiled model, or a static-batch one plus a dynamic one compiled on first need; each
    with its pool of infer requests (safe to ``run`` from several threads)."""

    def __init__(self, compiled: Any, *, batch: int = 0,
                 dynamic: Callable[[], Any] | None = None, requests: int = 0,
                 per_shape: Callable[[list[tuple[int, ...]]], Any] | None = None,
                 shape_limit: int = 0) -> None:
        self._compiled = compiled
        self._per_shape = per_shape
        self._shape_limit = shape_limit if per_shape is not None else 0
        self._by_shape: dict[tuple[tuple[int, ...], ...], tuple[Any, Pool[Any]]] = {}
        self._requests = requests
        self._pool: Pool[Any] | None = _request_pool(compiled, requests)
        self._batch = batch
        self._make_dynamic = dynamic
        self._dynamic: tuple[Any, Pool[Any]] | None = None
        self._compile_lock = threading.Lock()
        self.input_names = tuple(next(iter(i.get_names()), f"input{k}")
                                 for k, i in enumerate(compiled.inputs))
        self.output_names = tuple(next(iter(o.get_names()), f"output{k}")
                                  for k, o in enumerate(compiled.outputs))
        self.details = {
            "inference_precision": _type_name(compiled.get_property("INFERENCE_PRECISION_HINT")),
            "execution_devices": list(compiled.get_property("EXECUTION_DEVICES")),
            "static_batch": batch,
        }
        if self._shape_limit:
            self.details["static_shapes"] = []

    def _for_shape(self, arrays: list[np.ndarray]) -> tuple[Any, Pool[Any]] | None:
        """The static compile for this call's input shapes (made on first need, once, while
        fewer than ``shape_limit`` exist), or None: the dynamic compile serves it."""
        key = tuple(tuple(int(n) for n in a.shape) for a in arrays)
        hit = self._by_shape.get(key)
        if hit is not None or len(self._by_shape) >= self._shape_limit:
            return hit
        with self._compile_lock:
            hit = self._by_shape.get(key)
            if hit is None and len(self._by_shape) < self._shape_limit and self._per_shape:
                compiled = self._per_shape(list(key))
                hit = self._by_shape[key] = (compiled, _request_pool(compiled, self._requests))
                self.details["static_shapes"].append(["x".join(map(str, k)) for k in key])
        return hit

    def _pick(self, arrays: list[np.ndarray]) -> tuple[Any, Pool[Any]]:
        """The (compiled model, request pool) for this call's batch size; compiles the dynamic
        model on first need, once, whichever threads ask at the same time.

        Raises:
            BackendError: the session is closed.
        """
        compiled, pool = self._compiled, self._pool
        if compiled is None or pool is None:
            raise BackendError("the session is closed", code="closed")
        if self._shape_limit:
            return self._for_shape(arrays) or (compiled, pool)
        if not self._batch or all(a.ndim and a.shape[0] == self._batch for a in arrays):
            return compiled, pool
        dynamic = self._dynamic
        if dynamic is None:
            with self._compile_lock:
                dynamic = self._dynamic
                if dynamic is None:
                    if self._make_dynamic is None:
                        raise BackendError("the session is closed", code="closed")
                    compiled = self._make_dynamic()
                    dynamic = self._dynamic = (compiled, _request_pool(compiled, self._requests))
                    self._make_dynamic = None
                    self.details["dynamic_compiled"] = True
        return dynamic

    def run(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """Run on ``feeds`` (input order) with a request of its own.

        Raises:
            BackendError: the session is closed, or OpenVINO failed (compiling or running).
        """
        arrays = [np.ascontiguousarray(v) for v in feeds.values()]
        try:
            compiled, pool = self._pick(arrays)
            with pool.use() as req:
                res = req.infer(arrays)
                return [np.array(res[o]) for o in compiled.outputs]
        except BackendError:
            raise
        except Exception as exc:  # OpenVINO raises RuntimeError with its own text
            raise library_error("OpenVINO failed to run the model", exc, fix=RUN_FIX) from None

    def close(self) -> None:
        """Drop the compiled models and requests (calls still running finish first)."""
        self._pool = None
        self._compiled = None
        self._dynamic = None
        self._make_dynamic = None
        self._by_shape = {}
        self._per_shape = None


class OpenVinoBackend(Backend):
    """Runs ``openvino-ir`` (packed), ``onnx`` and ``onnx-qdq`` artifacts with OpenVINO."""

    name = "openvino"
    formats = ("openvino-ir", "onnx", "onnx-qdq")
    requires = ("openvino",)
    modules = ("openvino",)
    extra = "openvino"

    def open(self, model: bytes, io: IOSpec, options: Mapping[str, Any]) -> BackendSession:
        """Read and compile ``model`` (see the module docstring for the options).

        Raises:
            InvalidInputError: a corrupt packed IR.
            BackendError: a bad option, or OpenVINO cannot load or compile the model.
        """
        ov = import_openvino()

        props = compile_properties(options)
        batch = static_batch(options)
        requests = infer_requests(options)
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
        # the compiled model holds its own weights: the read ov.Model (graph + a copy of the
        # weights) is dropped here, and a later compile reads the model bytes again
        spatial = original is None and spatial_dynamic(ov_model)
        del ov_model
        if original is None:
            limit = static_shapes(options)
            if not limit or not spatial:
                return _OvSession(compiled, requests=requests)

            def per_shape(shapes: list[tuple[int, ...]]) -> Any:
                static = read_model(core, model)
                static.reshape({k: ov.PartialShape(list(s)) for k, s in enumerate(shapes)})
                return core.compile_model(static, device, props)

            return _OvSession(compiled, requests=requests, per_shape=per_shape, shape_limit=limit)

        def dynamic() -> Any:  # the model as stored: its dynamic batch; compiled once
            return core.compile_model(read_model(core, model), device, props)

        return _OvSession(compiled, batch=batch, dynamic=dynamic, requests=requests)
