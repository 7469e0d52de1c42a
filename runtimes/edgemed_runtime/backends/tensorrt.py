"""TensorRT backend: the engine is built on the device from a TensorRT recipe (QDQ or FP16 ONNX
plus builder settings), cached encrypted, and rebuilt when the GPU or TensorRT version changes.

A ``trt-plan-recipe`` artifact's model file is the ONNX the engine is built from; its
``backend_options["recipe"]`` holds the builder settings (``TrtRecipe``). Engines are hardware
specific, so they are never shipped: the first ``open`` on a device builds one (minutes for a large
model) and, when the caller gives ``engine_cache_key`` (the bundle layer passes a key derived from
the bundle's data key), stores it AES-256-GCM encrypted under ``engine_cache_dir``: one file per
ONNX + recipe (named by an HMAC), holding the TensorRT version and GPU (name, compute capability,
driver) it was built for, authenticated; after a TensorRT or GPU change the engine is rebuilt and
replaces the file. Without a key nothing is written to disk.

Precision: ``typing="strong"`` creates a STRONGLY_TYPED network (types come from the ONNX: QDQ ->
explicit INT8, an FP16 ONNX -> FP16; the only mode in TensorRT >= 11); ``typing="weak"``
(TensorRT 10) sets the INT8 builder flag for QDQ models plus FP16 for the layers left unquantized
(``fp16_fallback``).

Everything except building and running (recipe validation, flags, cache keys, cache
encryption) is plain Python, importable without TensorRT or a GPU.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ..errors import BackendError, InvalidInputError
from ..iospec import IOSpec
from ..util import atomic_write_bytes
from .base import Backend, BackendSession

CACHE_MAGIC = b"EMTRT1\0\0"
RECIPE_MAGIC = b"EMTRTR1\0"
_HKDF_INFO = b"edgemed tensorrt engine cache v1"
_PRECISIONS = ("int8", "fp16", "fp32")
_TYPINGS = ("auto", "strong", "weak")


@dataclass(frozen=True)
class TrtRecipe:
    """How to build the engine.

    Attributes:
        precision: what the ONNX carries: ``int8`` (QDQ), ``fp16`` (FP16 ONNX) or ``fp32``.
        typing: ``strong`` (types from the network), ``weak`` (builder precision flags;
            TensorRT 10 only) or ``auto`` (weak on TensorRT 10, strong on >= 11).
        fp16_fallback: with ``weak`` typing, let unquantized layers run in FP16.
        workspace_mb: builder workspace memory pool limit.
        min_batch, opt_batch, max_batch: the optimization profile of a dynamic batch dimension.
        optimization_level: builder optimization level (0-5; TensorRT's default is 3).
    """

    precision: str = "int8"
    typing: str = "auto"
    fp16_fallback: bool = True
    workspace_mb: int = 1024
    min_batch: int = 1
    opt_batch: int = 1
    max_batch: int = 8
    optimization_level: int = 3

    @classmethod
    def from_options(cls, options: Mapping[str, Any],
                     base: Mapping[str, Any] | None = None) -> "TrtRecipe":
        """The recipe ``base`` (e.g. from the artifact) overridden by ``options["recipe"]``.

        Raises:
            InvalidInputError: an unknown key or an invalid value.
        """
        raw = {**dict(base or {}), **dict(options.get("recipe", {}) or {})}
        unknown = set(raw) - set(cls.__dataclass_fields__)
        if unknown:
            raise InvalidInputError("unknown TensorRT recipe settings",
                                    expected=", ".join(cls.__dataclass_fields__),
                                    found=", ".join(sorted(unknown)), code="bad-option")
        try:
            r = cls(**raw)
            ints = {k: int(getattr(r, k)) for k in ("workspace_mb", "min_batch", "opt_batch",
                                                     "max_batch", "optimization_level")}
            r = cls(precision=str(r.precision), typing=str(r.typing),
                    fp16_fallback=bool(r.fp16_fallback), **ints)
        except (TypeError, ValueError) as exc:
            raise InvalidInputError("invalid TensorRT recipe", found=str(exc),
                                    code="bad-option") from None
        r.validate()
        return r

    def validate(self) -> None:
        """Raise InvalidInputError when a value is out of range."""
        problems = []
        if self.precision not in _PRECISIONS:
            problems.append(f"precision {self.precision!r} not in {_PRECISIONS}")
        if self.typing not in _TYPINGS:
            problems.append(f"typing {self.typing!r} not in {_TYPINGS}")
        if not 1 <= self.min_batch <= self.opt_batch <= self.max_batch:
            problems.append(f"need 1 <= min_batch <= opt_batch <= max_batch, got "
                            f"{self.min_batch}/{self.opt_batch}/{self.max_batch}")
        if self.workspace_mb < 16:
            problems.append(f"workspace_mb {self.workspace_mb} < 16")
        if not 0 <= self.optimization_level <= 5:
            problems.append(f"optimization_level {self.optimization_level} not in 0..5")
        if problems:
            raise InvalidInputError("invalid TensorRT recipe", found="; ".join(problems),
                                    code="bad-option")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def pack_recipe(recipe: TrtRecipe, onnx_model: bytes) -> bytes:
    """A ``trt-plan-recipe`` model file: magic, u32 JSON length, recipe JSON, ONNX bytes."""
    meta = json.dumps(recipe.to_dict(), sort_keys=True).encode()
    return RECIPE_MAGIC + len(meta).to_bytes(4, "little") + meta + onnx_model


def unpack_recipe(blob: bytes) -> tuple[dict[str, Any], bytes]:
    """Split a recipe file into (recipe settings, ONNX bytes).

    Raises:
        InvalidInputError: not a recipe file.
    """
    head = len(RECIPE_MAGIC) + 4
    if len(blob) < head or blob[: len(RECIPE_MAGIC)] != RECIPE_MAGIC:
        raise InvalidInputError("not a TensorRT recipe", expected="edgemed recipe (EMTRTR1)",
                                found=f"{len(blob)} bytes starting {blob[:8]!r}", code="bad-model")
    n = int.from_bytes(blob[len(RECIPE_MAGIC):head], "little")
    try:
        meta = json.loads(blob[head:head + n])
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise InvalidInputError("corrupt TensorRT recipe header", code="bad-model") from None
    if not isinstance(meta, dict):
        raise InvalidInputError("corrupt TensorRT recipe header", code="bad-model")
    return meta, blob[head + n:]


def trt_major(version: str) -> int:
    """Major version number of a TensorRT version string ("10.7.0" -> 10)."""
    try:
        return int(str(version).split(".")[0])
    except ValueError:
        return 0


def network_flags(recipe: TrtRecipe, major: int) -> list[str]:
    """Names of the ``NetworkDefinitionCreationFlag`` members to set."""
    if recipe.typing == "strong" or major >= 11:
        return ["STRONGLY_TYPED"]
    return []  # weak / auto on TensorRT 10: precision comes from builder flags


def builder_flags(recipe: TrtRecipe, major: int) -> list[str]:
    """Names of the ``BuilderFlag`` members to set.

    Raises:
        BackendError: weak typing asked of TensorRT >= 11 (precision flags no longer exist).
    """
    if recipe.typing == "strong" or (recipe.typing == "auto" and major >= 11):
        return []
    if major >= 11:
        raise BackendError(
            "TensorRT >= 11 builds only strongly typed networks", expected="typing = 'strong'",
            found=f"typing = 'weak' with TensorRT {major}", code="trt-weak-typing",
            fix="set typing = 'strong' in the recipe (use the fp16 pass for FP16 layers)",
        )
    flags: list[str] = []
    if recipe.precision == "int8":
        flags.append("INT8")
        if recipe.fp16_fallback:
            flags.append("FP16")
    elif recipe.precision == "fp16":
        flags.append("FP16")
    return flags


def profile_shapes(recipe: TrtRecipe, io: IOSpec) -> dict[str, tuple[tuple[int, ...], ...]]:
    """``{input: (min, opt, max)}`` shapes of the optimization profile (batch from the recipe)."""
    if not io.dynamic_batch:
        shape = tuple(io.input_shape)
        return {io.input_name: (shape, shape, shape)}
    s = tuple(io.sample_shape)
    return {io.input_name: ((recipe.min_batch, *s), (recipe.opt_batch, *s),
                            (recipe.max_batch, *s))}


@dataclass(frozen=True)
class GpuInfo:
    """What identifies the hardware an engine was built for."""

    name: str
    compute_capability: str
    driver: str = ""


def slot_key(model: bytes, recipe: TrtRecipe) -> str:
    """Hex SHA-256 of what the engine is built from (ONNX bytes + recipe): one cache file each."""
    blob = json.dumps({"model_sha256": hashlib.sha256(model).hexdigest(),
                       "recipe": recipe.to_dict()}, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()


def env_key(trt_version: str, gpu: GpuInfo) -> str:
    """Hex SHA-256 of what an engine is only valid for (TensorRT version, GPU, driver)."""
    blob = json.dumps({"tensorrt": trt_version, "gpu": asdict(gpu)}, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()


class EngineCache:
    """Engines on disk, AES-256-GCM encrypted, one file per model + recipe.

    The file name is an HMAC of the slot key (it does not identify the model); the ciphertext
    carries the environment key (TensorRT version + GPU) inside, authenticated, so an engine
    from another GPU or TensorRT version reads as ``stale`` and its rebuild replaces the file
    (old engines do not pile up).

    Args:
        directory: where cache files live (created on first store).
        key: the caller's secret (>= 16 bytes); the keys used are derived from it by HKDF.
    Raises:
        InvalidInputError: a key shorter than 16 bytes.
    """

    def __init__(self, directory: str | os.PathLike[str], key: bytes) -> None:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.kdf.hkdf import HKDF

        if not isinstance(key, (bytes, bytearray)) or len(key) < 16:
            found = len(key) if isinstance(key, (bytes, bytearray)) else type(key).__name__
            raise InvalidInputError("engine cache key too short", expected=">= 16 bytes",
                                    found=str(found), code="bad-key")
        self.directory = Path(directory)
        okm = HKDF(algorithm=hashes.SHA256(), length=64, salt=None,
                   info=_HKDF_INFO).derive(bytes(key))
        self._enc_key, self._name_key = okm[:32], okm[32:]
        self.last_event = ""

    def path_for(self, slot: str) -> Path:
        """The cache file of ``slot`` (an HMAC of it, so names do not identify the model)."""
        tag = hmac.new(self._name_key, slot.encode(), hashlib.sha256).hexdigest()[:40]
        return self.directory / f"{tag}.engine.enc"

    def store(self, slot: str, env: str, plan: bytes) -> Path:
        """Encrypt ``env`` + ``plan`` (AAD = the slot) and write atomically; return the path."""
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        nonce = os.urandom(12)
        blob = CACHE_MAGIC + nonce + AESGCM(self._enc_key).encrypt(
            nonce, env.encode() + bytes(plan), slot.encode())
        p = self.path_for(slot)
        atomic_write_bytes(p, blob)
        self.last_event = "stored"
        return p

    def load(self, slot: str, env: str) -> bytes | None:
        """The decrypted plan; None when absent (``miss``), built for another TensorRT / GPU
        (``stale``), or not authentic (``rejected``: another key, truncated or tampered; the
        file is removed). ``last_event`` says which."""
        from cryptography.exceptions import InvalidTag
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        p = self.path_for(slot)
        try:
            blob = p.read_bytes()
        except FileNotFoundError:
            self.last_event = "miss"
            return None
        head = len(CACHE_MAGIC) + 12
        if len(blob) > head and blob[: len(CACHE_MAGIC)] == CACHE_MAGIC:
            try:
                plain = AESGCM(self._enc_key).decrypt(blob[len(CACHE_MAGIC):head], blob[head:],
                                                      slot.encode())
            except InvalidTag:
                plain = None
            if plain is not None:
                if plain[: len(env)] != env.encode():
                    self.last_event = "stale"
                    return None
                self.last_event = "hit"
                return plain[len(env):]
        p.unlink(missing_ok=True)
        self.last_event = "rejected"
        return None


# ---- everything below needs TensorRT and a GPU ---------------------------------------------------

def _cudart() -> Any:
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
    except ImportError:
        from cuda import cudart  # type: ignore[no-redef]  # older cuda-python
    return cudart


def _check(result: Any, what: str) -> Any:
    err, *rest = result if isinstance(result, tuple) else (result,)
    if int(getattr(err, "value", err)) != 0:  # cudaError_t.cudaSuccess == 0
        raise BackendError(f"CUDA call failed: {what}", found=str(err), code="cuda-error",
                           fix="check the NVIDIA driver and that a GPU is visible (nvidia-smi)")
    return rest[0] if len(rest) == 1 else rest


def gpu_info(device: int = 0) -> GpuInfo:
    """Name, compute capability and driver version of GPU ``device`` (needs cuda-python)."""
    cudart = _cudart()
    props = _check(cudart.cudaGetDeviceProperties(device), "cudaGetDeviceProperties")
    driver = _check(cudart.cudaDriverGetVersion(), "cudaDriverGetVersion")
    name = props.name.decode(errors="replace") if isinstance(props.name, bytes) else str(props.name)
    return GpuInfo(name=name.strip("\0 "), compute_capability=f"{props.major}.{props.minor}",
                   driver=str(driver))


class _TrtLogger:
    """Collects TensorRT's warnings and errors (so they can be put in a BackendError)."""

    def __new__(cls, trt: Any) -> Any:
        class Logger(trt.ILogger):
            def __init__(self) -> None:
                trt.ILogger.__init__(self)
                self.messages: list[str] = []

            def log(self, severity: Any, msg: str) -> None:
                if severity <= trt.ILogger.Severity.WARNING:
                    self.messages.append(f"{severity.name}: {msg}")

        return Logger()


def build_engine(trt: Any, model: bytes, io: IOSpec, recipe: TrtRecipe, logger: Any) -> bytes:
    """Parse the ONNX and build a serialized engine with ``recipe``.

    Raises:
        BackendError: the parser rejects the model or the build fails.
    """
    major = trt_major(trt.__version__)
    flags = 0
    for name in network_flags(recipe, major):
        flags |= 1 << int(getattr(trt.NetworkDefinitionCreationFlag, name))
    builder = trt.Builder(logger)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(model):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise BackendError("TensorRT cannot parse the ONNX model",
                           expected="ONNX TensorRT's parser supports (QDQ: symmetric INT8)",
                           found="; ".join(errors)[:800] or "parser failed", code="trt-parse")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, recipe.workspace_mb << 20)
    config.builder_optimization_level = recipe.optimization_level
    for name in builder_flags(recipe, major):
        config.set_flag(getattr(trt.BuilderFlag, name))
    profile = builder.create_optimization_profile()
    for name, (lo, opt, hi) in profile_shapes(recipe, io).items():
        profile.set_shape(name, lo, opt, hi)
    config.add_optimization_profile(profile)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise BackendError("TensorRT failed to build the engine",
                           found="; ".join(logger.messages[-5:])[:800] or "no engine",
                           code="trt-build", fix="check the recipe (workspace_mb, batch range)")
    return bytes(plan)


class _TrtSession(BackendSession):
    """Runs a deserialized engine with device buffers managed through cuda-python.

    One execution context, stream and set of device buffers, used by one ``run`` at a time (a
    lock): an execution context is not thread-safe, and the engine's single optimization profile
    cannot be shared by several contexts running at once. The CUDA device is per thread, so every
    call selects ``device`` first.
    """

    def __init__(self, trt: Any, engine: Any, details: Mapping[str, Any], device: int = 0) -> None:
        self._trt = trt
        self._cudart = _cudart()
        self._device = device
        self._engine = engine
        self._ctx = engine.create_execution_context()
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        mode = trt.TensorIOMode.INPUT
        self.input_names = tuple(n for n in names if engine.get_tensor_mode(n) == mode)
        self.output_names = tuple(n for n in names if engine.get_tensor_mode(n) != mode)
        self._stream = _check(self._cudart.cudaStreamCreate(), "cudaStreamCreate")
        self._buffers: dict[str, tuple[int, int]] = {}
        self._lock = threading.Lock()
        self.details = dict(details)

    def _buffer(self, name: str, nbytes: int) -> int:
        ptr, size = self._buffers.get(name, (0, 0))
        if size < nbytes:
            if ptr:
                _check(self._cudart.cudaFree(ptr), "cudaFree")
            ptr = int(_check(self._cudart.cudaMalloc(nbytes), "cudaMalloc"))
            self._buffers[name] = (ptr, nbytes)
        return ptr

    def run(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """Copy ``feeds`` (input order) to the GPU, execute, copy the outputs back (float32);
        calls from several threads take turns.

        Raises:
            BackendError: the session is closed, a shape outside the profile, or a CUDA /
                TensorRT failure.
        """
        with self._lock:
            if self._ctx is None:
                raise BackendError("the session is closed", code="closed")
            _check(self._cudart.cudaSetDevice(self._device), "cudaSetDevice")
            return self._run(feeds)

    def _run(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """``run`` without the lock (the caller holds it)."""
        trt, cu = self._trt, self._cudart
        h2d = cu.cudaMemcpyKind.cudaMemcpyHostToDevice
        d2h = cu.cudaMemcpyKind.cudaMemcpyDeviceToHost
        for name, value in zip(self.input_names, feeds.values()):
            x = np.ascontiguousarray(value, dtype=trt.nptype(self._engine.get_tensor_dtype(name)))
            if not self._ctx.set_input_shape(name, x.shape):
                raise BackendError("input shape outside the engine's profile",
                                   found=str(x.shape), code="trt-shape",
                                   fix="rebuild with a recipe whose batch range covers it")
            ptr = self._buffer(name, x.nbytes)
            _check(cu.cudaMemcpyAsync(ptr, x.ctypes.data, x.nbytes, h2d, self._stream), "memcpy")
            self._ctx.set_tensor_address(name, ptr)
        outs = []
        for name in self.output_names:
            shape = tuple(self._ctx.get_tensor_shape(name))
            out = np.empty(shape, dtype=trt.nptype(self._engine.get_tensor_dtype(name)))
            self._ctx.set_tensor_address(name, self._buffer(name, max(out.nbytes, 1)))
            outs.append(out)
        if not self._ctx.execute_async_v3(self._stream):
            raise BackendError("TensorRT execution failed", code="trt-run")
        for name, out in zip(self.output_names, outs):
            _check(cu.cudaMemcpyAsync(out.ctypes.data, self._buffers[name][0], out.nbytes, d2h,
                                      self._stream), "memcpy")
        _check(cu.cudaStreamSynchronize(self._stream), "cudaStreamSynchronize")
        return [o.astype(np.float32, copy=False) for o in outs]

    def close(self) -> None:
        """Free the device buffers and the stream (after a ``run`` in progress ends)."""
        with self._lock:
            if self._buffers or self._stream is not None:
                self._cudart.cudaSetDevice(self._device)
            for ptr, _ in self._buffers.values():
                self._cudart.cudaFree(ptr)
            self._buffers.clear()
            if self._stream is not None:
                self._cudart.cudaStreamDestroy(self._stream)
                self._stream = None
            self._ctx = None
            self._engine = None


class TensorRtBackend(Backend):
    """Builds (or loads from the encrypted cache) and runs TensorRT engines on NVIDIA GPUs.

    Options: ``recipe`` (TrtRecipe fields), ``device`` (GPU index), ``engine_cache_dir`` and
    ``engine_cache_key`` (bytes; no disk cache without it).
    """

    name = "tensorrt"
    formats = ("trt-plan-recipe",)
    requires = ("tensorrt", "cuda-python")
    modules = ("tensorrt", "cuda")

    def open(self, model: bytes, io: IOSpec, options: Mapping[str, Any]) -> BackendSession:
        import tensorrt as trt

        base, model = unpack_recipe(model)
        recipe = TrtRecipe.from_options(options, base)
        device = int(options.get("device", 0) or 0)
        _check(_cudart().cudaSetDevice(device), "cudaSetDevice")
        slot, env = slot_key(model, recipe), env_key(trt.__version__, gpu_info(device))
        cache = None
        if options.get("engine_cache_key"):
            cache_dir = options.get("engine_cache_dir") or (
                Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "edgemed" / "trt")
            cache = EngineCache(cache_dir, options["engine_cache_key"])
        logger = _TrtLogger(trt)
        plan = cache.load(slot, env) if cache is not None else None
        event = cache.last_event if cache is not None else "no-cache"
        if plan is None:
            plan = build_engine(trt, model, io, recipe, logger)
            if cache is not None:
                cache.store(slot, env, plan)
        runtime = trt.Runtime(logger)
        engine = runtime.deserialize_cuda_engine(plan)
        if engine is None:
            raise BackendError("TensorRT cannot deserialize the engine",
                               found="; ".join(logger.messages[-3:])[:500], code="trt-load")
        return _TrtSession(trt, engine, {"cache": event, "tensorrt": trt.__version__}, device)
