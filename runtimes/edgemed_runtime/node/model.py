"""The node's one shared Session and hot swap between series.

``ModelHolder.lease()`` hands a worker the current (session, model info) for one series and
counts it in use; ``maybe_swap()`` (called between series) opens the newly installed bundle of
the store's family when ``current.json`` changed, and switches only when it opened: a bundle
that is refused (signature, rollback, device key...) leaves the old one serving. An old session
is closed when its last lease ends.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from ..errors import EdgemedError
from ..session import Session
from .config import ModelConfig


@dataclass(frozen=True)
class Loaded:
    """A session and what names it in results: name (family), version, bundle id."""

    session: Session
    name: str
    version: str
    bundle_id: str


def open_model(cfg: ModelConfig, passphrase: str | None = None) -> Loaded:
    """Open the configured bundle (the installed one of the family, or the fixed path) with
    ``passphrase`` for the device key (the CLI reads it from ``passphrase_env``).

    Raises:
        the errors of ``open_bundle`` / ``open_installed`` (BundleError and subclasses...).
    """
    from ..api import open as open_any
    from ..bundle.install import installed_path

    path = cfg.bundle if cfg.bundle is not None else installed_path(cfg.store, cfg.family)
    kw: dict[str, Any] = {"trust": cfg.trust, "device_key": cfg.device_key,
                          "state_dir": cfg.state_dir}
    if passphrase is not None:
        kw["device_key_password"] = passphrase
    sess = open_any(path, options={"threads": cfg.threads} if cfg.threads else None, **kw)
    info = sess.info
    return Loaded(sess, str(info.get("family", "model")), str(info.get("version", "")),
                  str(info.get("bundle_id", "")))


class ModelHolder:
    """The serving model, its leases and the hot swap.

    Args:
        cfg: the [model] table.
        on_event: called with (event, fields) for swaps and refusals (the audit log).
        passphrase: the device key's passphrase, if it has one.
    """

    def __init__(self, cfg: ModelConfig, on_event: Callable[..., None],
                 passphrase: str | None = None) -> None:
        self.cfg = cfg
        self._on_event = on_event
        self._open: Callable[[ModelConfig], Loaded] = lambda c: open_model(c, passphrase)
        self._lock = threading.Lock()
        self._seen = self._marker()
        self.current = self._open(cfg)
        self._leases: dict[int, int] = {id(self.current): 0}
        self._retired: dict[int, Loaded] = {}

    def _marker(self) -> bytes | None:
        if self.cfg.store is None or self.cfg.family is None:
            return None
        try:
            return (Path(self.cfg.store) / self.cfg.family / "current.json").read_bytes()
        except OSError:
            return None

    def maybe_swap(self) -> bool:
        """Switch to a newly installed bundle if there is one; True when switched."""
        marker = self._marker()
        if marker is None or marker == self._seen:
            return False
        with self._lock:
            if marker == self._seen:
                return False
            self._seen = marker
            try:
                new = self._open(self.cfg)
            except EdgemedError as exc:
                self._on_event("swap-refused", code=exc.code,
                               serving=self.current.bundle_id)
                return False
            old, self.current = self.current, new
            self._leases[id(new)] = 0
            self._retired[id(old)] = old
            self._on_event("swapped", old=old.bundle_id, new=new.bundle_id)
            self._close_idle()
            return True

    def _close_idle(self) -> None:
        for key in [k for k, m in self._retired.items() if self._leases.get(k, 0) == 0]:
            self._retired.pop(key).session.close()
            self._leases.pop(key, None)

    @contextmanager
    def lease(self) -> Iterator[Loaded]:
        """The current model for one series."""
        with self._lock:
            m = self.current
            self._leases[id(m)] = self._leases.get(id(m), 0) + 1
        try:
            yield m
        finally:
            with self._lock:
                self._leases[id(m)] -= 1
                self._close_idle()

    def close(self) -> None:
        """Close every session."""
        with self._lock:
            for m in [self.current, *self._retired.values()]:
                m.session.close()
            self._retired.clear()
