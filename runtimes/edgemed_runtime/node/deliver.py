"""Results to the destination: C-STORE (pynetdicom SCU, optionally over TLS) and / or
DICOMweb STOW-RS (``stow.py``), with retries and exponential backoff.

``Courier.send(data)`` sends one DICOM Part 10 instance by C-STORE (over a kept-open
association per thread); ``Courier.sender(data)`` sends it by every configured way, each one
once it succeeded (a retry sends only by the ways that failed); ``with_retries`` calls it up to
``retries + 1`` times (sleeping ``backoff_s * 2**attempt`` between) and reports the outcome;
the caller moves what still failed to the dead-letter folder.
"""

from __future__ import annotations

import io
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from ._deps import pynetdicom
from .config import DestinationConfig
from .stow import client_context, stow


@dataclass(frozen=True)
class Outcome:
    """The delivery's result: ``ok``, how many attempts it took, and the last failure."""

    ok: bool
    attempts: int
    last_error: str = ""


COMPREHENSIVE_SR = "1.2.840.10008.5.1.4.1.1.88.33"
SEGMENTATION = "1.2.840.10008.5.1.4.1.1.66.4"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
OK_STATUSES = (0x0000, 0xB000, 0xB006, 0xB007)


class Courier:
    """C-STORE to the destination over one association per thread, kept open and reused across
    results (re-opened when the peer closed it or lacks the result's presentation context).

    Args:
        dest: the [destination] table.
        calling_ae: the node's AE title.
    """

    def __init__(self, dest: DestinationConfig, calling_ae: str) -> None:
        self.dest, self.calling_ae = dest, calling_ae
        self._local = threading.local()
        self._lock = threading.Lock()
        self._open: list[Any] = []
        tls = dest.tls
        self._tls = client_context(tls.ca, tls.cert, tls.key) if tls is not None else None
        self._stow_tls = (client_context(dest.stow_ca) if dest.stow_url.startswith("https://")
                          else None)

    def sender(self, data: bytes) -> Callable[[], str]:
        """A ``send`` for ``with_retries``: delivers ``data`` by each way of
        ``destination.send_by``; '' once every way succeeded (each way succeeds once)."""
        ways = {"c-store": lambda: self.send(data),
                "stow-rs": lambda: stow(self.dest.stow_url, data, timeout_s=self.dest.timeout_s,
                                        context=self._stow_tls)}
        todo = list(self.dest.send_by)

        def send() -> str:
            errors = []
            for way in list(todo):
                err = ways[way]()
                if err:
                    errors.append(err)
                else:
                    todo.remove(way)
            return "; ".join(errors)
        return send

    def _association(self, sop: str, ts: str) -> Any:
        a = getattr(self._local, "assoc", None)
        if a is not None and a.is_established and any(
                c.abstract_syntax == sop and c.transfer_syntax[0] == ts
                for c in a.accepted_contexts):
            return a
        self._drop(a)
        pn = pynetdicom()
        ae = pn.AE(ae_title=self.calling_ae)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = self.dest.timeout_s
        for ctx in {(COMPREHENSIVE_SR, EXPLICIT_LE), (SEGMENTATION, EXPLICIT_LE), (sop, ts)}:
            ae.add_requested_context(*ctx)
        tls_args = (self._tls, self.dest.host) if self._tls is not None else None
        try:
            a = ae.associate(self.dest.host, self.dest.port, ae_title=self.dest.ae_title,
                             tls_args=tls_args)
        except (OSError, ValueError):  # a TLS handshake refused (certificate, protocol)
            return None
        if not a.is_established:
            return None
        self._local.assoc = a
        with self._lock:
            self._open.append(a)
        return a

    def _drop(self, a: Any) -> None:
        self._local.assoc = None
        if a is None:
            return
        with self._lock:
            if a in self._open:
                self._open.remove(a)
        if a.is_established:
            a.release()

    def send(self, data: bytes) -> str:
        """C-STORE one Part 10 instance; '' on success, else a short reason (no PHI)."""
        from pydicom import dcmread

        ds = dcmread(io.BytesIO(data))
        a = self._association(str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID))
        if a is None:
            return "association rejected or destination unreachable"
        try:
            status = a.send_c_store(ds)
        except (RuntimeError, ValueError, OSError) as exc:
            self._drop(a)
            return f"association failed: {type(exc).__name__}"
        code = int(getattr(status, "Status", -1)) if status else -1
        if code in OK_STATUSES:
            return ""
        self._drop(a)  # a broken or refusing association is not reused
        return f"C-STORE status 0x{code & 0xFFFF:04X}" if code >= 0 else "no C-STORE response"

    def close(self) -> None:
        """Release every open association."""
        with self._lock:
            open_, self._open = self._open, []
        for a in open_:
            if a.is_established:
                a.release()


def with_retries(send: Callable[[], str], *, retries: int, backoff_s: float,
                 stop: threading.Event | None = None) -> Outcome:
    """Call ``send`` (returns '' on success) up to ``retries + 1`` times with backoff; a set
    ``stop`` event ends the waiting early (the outcome is then a failure, to be retried later)."""
    last = ""
    for attempt in range(retries + 1):
        if attempt:
            delay = backoff_s * (2 ** (attempt - 1))
            if stop is not None and stop.wait(delay):
                return Outcome(False, attempt, last or "stopped")
            if stop is None:
                time.sleep(delay)
        try:
            last = send()
        except OSError as exc:
            last = f"network error: {exc.strerror or type(exc).__name__}"
        if not last:
            return Outcome(True, attempt + 1)
    return Outcome(False, retries + 1, last)
