"""One run at a time: an exclusive ``fcntl.flock`` on a lock file (the release folder's
``.release.lock``, a registry's ``<registry>.lock``). The holder writes its pid, host and start
time into the file, so a second run can say who holds it; the kernel drops the lock when the
holder exits, however it exits, so a crashed run never leaves a stale lock."""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator

from edgemed_runtime.sdk import ExitCode

from ..errors import EdgemedError


class BusyError(EdgemedError):
    """Another run holds the lock (exit code 6, ``busy``)."""

    default_code = "locked"
    exit_code = int(ExitCode.BUSY)


def _holder(fd: int) -> str:
    """The holder's description from the lock file (best effort)."""
    try:
        d = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (OSError, ValueError):
        d = {}
    if not d:
        return "another process (no holder recorded yet)"
    return f"pid {d.get('pid')} on {d.get('host')}, started {d.get('started')} ({d.get('what')})"


@contextmanager
def hold(path: str | os.PathLike[str], *, what: str, wait: bool = False,
         say: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold the exclusive lock on ``path`` (created if needed) for the ``with`` block.

    ``what`` names the run (written for others to read). ``wait``: block until the holder is
    done (``say`` is told who is waited for); else refuse at once.

    Raises:
        BusyError: ``locked``, naming the holder's pid, host and start time (not ``wait``).
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(p, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            if not wait:
                raise BusyError(f"{p.parent} is in use by another run", found=holder,
                                expected=f"no other run holding {p.name}",
                                fix="wait for it to finish, or pass --wait", code="locked") from None
            if say is not None:
                say(f"waiting for {holder} to release {p}")
            fcntl.flock(fd, fcntl.LOCK_EX)
        info = {"pid": os.getpid(), "host": socket.gethostname(), "what": what,
                "started": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "since": time.time()}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
    finally:
        os.close(fd)  # closing the descriptor releases the lock
