"""Runtime backends behind one Session interface; imported lazily by name."""

from .base import Backend, BackendSession, backend_class, backend_names, get_backend, register_backend

__all__ = ["Backend", "BackendSession", "backend_class", "backend_names", "get_backend", "register_backend"]
