"""Results to the destination: C-STORE (pynetdicom SCU) with retries and exponential backoff.

``deliver(config, data)`` sends one DICOM Part 10 instance; ``with_retries`` calls it up to
``retries + 1`` times (sleeping ``backoff_s * 2**attempt`` between) and reports the outcome;
the caller moves what still failed to the dead-letter folder.
"""

from __future__ import annotations

import io
import threading
import time
from dataclasses import dataclass
from typing import Callable

from ._deps import pynetdicom
from .config import DestinationConfig


@dataclass(frozen=True)
class Outcome:
    """The delivery's result: ``ok``, how many attempts it took, and the last failure."""

    ok: bool
    attempts: int
    last_error: str = ""


def deliver(dest: DestinationConfig, data: bytes, calling_ae: str) -> str:
    """C-STORE one instance to ``dest``; '' on success, else a short reason (no PHI)."""
    pn = pynetdicom()
    from pydicom import dcmread

    ds = dcmread(io.BytesIO(data))
    ae = pn.AE(ae_title=calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = dest.timeout_s
    ae.add_requested_context(str(ds.SOPClassUID), [str(ds.file_meta.TransferSyntaxUID)])
    assoc = ae.associate(dest.host, dest.port, ae_title=dest.ae_title)
    if not assoc.is_established:
        return "association rejected or destination unreachable"
    try:
        status = assoc.send_c_store(ds)
    finally:
        assoc.release()
    code = int(getattr(status, "Status", -1)) if status else -1
    if code in (0x0000, 0xB000, 0xB007, 0xB006):
        return ""
    return f"C-STORE status 0x{code & 0xFFFF:04X}" if code >= 0 else "no C-STORE response"


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
