"""The backend interface every runtime backend implements, and the registry of backends.

A backend turns model bytes (never a plaintext path: bundles decrypt into memory) into a
BackendSession. Backends are imported lazily, by name, so ``import edgemed_runtime`` stays light.
"""

from __future__ import annotations

import importlib
import importlib.util
import threading
from abc import ABC, abstractmethod
from contextlib import contextmanager
from types import MappingProxyType
from typing import Any, Callable, ClassVar, Generic, Iterator, Mapping, Sequence, TypeVar

import numpy as np

from ..errors import BackendError, InvalidInputError, MissingDependencyError
from ..iospec import IOSpec


def library_error(message: str, exc: BaseException, **fields: Any) -> BackendError:
    """A BackendError for an exception the backend's library raised: its type and text (the first
    500 characters) as ``found``; ``fields`` (expected, fix, code) as given."""
    return BackendError(message, found=f"{type(exc).__name__}: {exc}"[:500], **fields)


#: the fix for a run that the library refused
RUN_FIX = "check the input shape and dtype against session.inputs"


T = TypeVar("T")


class Pool(Generic[T]):
    """Objects that one thread at a time may use (inference requests, contexts), made on first
    need by ``factory`` up to ``limit`` (at least 1); a caller finding all of them busy waits for
    one to come back.

    Args:
        factory: makes one more object; its exceptions reach the caller of ``use``.
        limit: the most objects ever made.
    """

    def __init__(self, factory: Callable[[], T], limit: int) -> None:
        self._factory = factory
        self._limit = max(1, int(limit))
        self._idle: list[T] = []
        self._made = 0
        self._cond = threading.Condition()

    @property
    def made(self) -> int:
        """How many objects the pool has made so far."""
        return self._made

    @contextmanager
    def use(self) -> Iterator[T]:
        """An object for this thread alone until the ``with`` block ends."""
        with self._cond:
            while not self._idle and self._made >= self._limit:
                self._cond.wait()
            make = not self._idle
            if make:
                self._made += 1
            else:
                item = self._idle.pop()
        if make:
            try:
                item = self._factory()
            except BaseException:
                with self._cond:
                    self._made -= 1
                    self._cond.notify()
                raise
        try:
            yield item
        finally:
            with self._cond:
                self._idle.append(item)
                self._cond.notify()


class BackendSession(ABC):
    """A loaded model inside one backend. ``run`` may be called from several threads at once:
    every backend makes that safe (one call's result never depends on another's)."""

    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    #: What the backend chose when it opened the model (execution providers, inference
    #: precision, engine cache hit...), for diagnostics; a backend assigns its own dict.
    details: Mapping[str, Any] = MappingProxyType({})

    @abstractmethod
    def run(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """Run the model; return the outputs in ``output_names`` order."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release native resources."""


RUNTIME_DIST = "edgemed-runtime"
"""The runtime's distribution name (what ``pip install`` takes)."""


def install_line(extra: str | None, packages: Sequence[str]) -> str:
    """The command that installs what is missing: the runtime extra when there is one
    (``pip install 'edgemed-runtime[openvino]'``), else the packages themselves."""
    if extra:
        return f"pip install '{RUNTIME_DIST}[{extra}]'"
    return f"pip install {' '.join(packages)}"


class Backend(ABC):
    """One way of running models (onnxruntime, OpenVINO, TensorRT...).

    Class attributes:
        name: registry key.
        formats: artifact formats it can run.
        requires: pip packages it needs (named in the error when missing).
        modules: import names checked by ``is_available``.
        accepts_external_weights: ``open(..., external=)`` takes a split ONNX model's
            initializers as ``(name, array)`` pairs, read in place (a bundle's ``weights``).
        extra: the ``edgemed-runtime`` extra that installs ``requires``
            (runtimes/pyproject.toml; None: the base runtime has them).
    """

    name: ClassVar[str]
    formats: ClassVar[tuple[str, ...]]
    requires: ClassVar[tuple[str, ...]]
    modules: ClassVar[tuple[str, ...]]
    accepts_external_weights: ClassVar[bool] = False
    extra: ClassVar[str | None] = None

    @classmethod
    def missing(cls) -> list[str]:
        """The pip packages of ``requires`` whose modules cannot be found."""
        return [
            pkg for pkg, mod in zip(cls.requires, cls.modules) if importlib.util.find_spec(mod) is None
        ]

    @classmethod
    def is_available(cls) -> bool:
        """True when every module the backend needs is importable."""
        return not cls.missing()

    @classmethod
    def ensure_available(cls) -> None:
        """Raise MissingDependencyError naming the packages to install."""
        miss = cls.missing()
        if miss:
            raise MissingDependencyError(
                f"backend {cls.name!r} is not available",
                expected=f"packages {', '.join(cls.requires)}",
                found=f"missing {', '.join(miss)}",
                fix=install_line(cls.extra, miss),
            )

    @abstractmethod
    def open(self, model: bytes, io: IOSpec, options: Mapping[str, Any]) -> BackendSession:
        """Create a session from model bytes with backend ``options``."""


_REGISTRY: dict[str, str] = {
    "onnxruntime": "edgemed_runtime.backends.onnxruntime:OnnxRuntimeBackend",
    "openvino": "edgemed_runtime.backends.openvino:OpenVinoBackend",
    "tensorrt": "edgemed_runtime.backends.tensorrt:TensorRtBackend",
    "executorch": "edgemed_runtime.backends.executorch:ExecuTorchBackend",
    "litert": "edgemed_runtime.backends.litert:LiteRtBackend",
}


def _plugins_from_env() -> None:
    """Backends named in $EDGEMED_RUNTIME_BACKENDS (``name=module:Class`` entries separated by
    ``;``): third-party backends, registered without editing this file."""
    import os

    for entry in os.environ.get("EDGEMED_RUNTIME_BACKENDS", "").split(";"):
        name, sep, target = entry.strip().partition("=")
        if sep and name.strip() and ":" in target:
            _REGISTRY.setdefault(name.strip(), target.strip())


_plugins_from_env()


def register_backend(name: str, target: str) -> None:
    """Register a backend class by ``"module:Class"`` path (imported on first use)."""
    _REGISTRY[name] = target


def backend_names() -> list[str]:
    """Names of all registered backends."""
    return sorted(_REGISTRY)


def backend_class(name: str) -> type[Backend]:
    """The backend class registered as ``name`` (its module imports no heavy library).

    Raises:
        InvalidInputError: no such backend.
    """
    if name not in _REGISTRY:
        raise InvalidInputError(
            "unknown backend", expected=", ".join(backend_names()), found=name,
            code="unknown-backend",
        )
    mod_name, cls_name = _REGISTRY[name].split(":")
    return getattr(importlib.import_module(mod_name), cls_name)


def get_backend(name: str) -> Backend:
    """Instantiate the backend ``name``.

    Raises:
        InvalidInputError: no such backend.
        MissingDependencyError: its packages are not installed.
    """
    cls = backend_class(name)
    cls.ensure_available()
    return cls()
