"""Durable per-device state: the highest release accepted per model family (rollback protection).

One JSON file per family under ``<state_dir>/rollback/<family>.json``, replaced atomically
(temp file + fsync + rename + fsync of the folder), so a crash leaves the old or the new record.
A state folder that cannot be written (read-only, full, a file in the way, under /proc) raises
``StateError`` naming the path and the fix, never a raw ``OSError``.
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

from ..errors import BundleError, RollbackError, StateError
from ..util import TEMP_SUFFIX, atomic_write_bytes, remove_stale_temps, temp_prefix
from .format import BundleManifest, canonical_json, check_family, format_time

STATE_VERSION = 1


def default_state_dir() -> Path:
    """``$EDGEMED_STATE_DIR``, else ``~/.edgemed/state``."""
    env = os.environ.get("EDGEMED_STATE_DIR")
    return Path(env) if env else Path.home() / ".edgemed" / "state"


def state_error(what: str, path: Path, exc: OSError, outcome: str = "") -> StateError:
    """A StateError for an ``OSError`` met writing ``path`` (``what``: "rollback state";
    ``outcome``: what that means for the caller, appended to the message).

    The fix depends on the cause: full filesystem, read-only / permission, or a file where a
    folder is expected."""
    code = exc.errno
    if code in (errno.ENOSPC, errno.EDQUOT):
        fix, kind = "free space on that filesystem (or raise the quota), then retry", "state-full"
    elif code in (errno.ENOTDIR, errno.EEXIST):
        fix, kind = "remove the file that is in the way, or point at a folder", "state-unwritable"
    else:
        fix, kind = "make that folder writable, or pass another one (--state-dir, " \
                    "EDGEMED_STATE_DIR)", "state-unwritable"
    return StateError(f"{what} cannot be written{outcome}", expected="a writable "
                      "folder with free space", found=f"{path}: {exc.strerror or exc}",
                      fix=fix, code=kind)


def durable_write(path: Path, data: bytes) -> None:
    """Atomically replace ``path`` with ``data`` and fsync its folder (POSIX).

    Raises:
        OSError: from the write (callers map it with ``state_error``).
    """
    atomic_write_bytes(path, data)
    try:
        fd = os.open(path.parent, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


@dataclass(frozen=True)
class AcceptedRelease:
    """The newest bundle a device accepted for one family."""

    family: str
    release: int
    bundle_id: str
    accepted_at: str


class RollbackState:
    """Read, check and record accepted releases in ``state_dir``."""

    def __init__(self, state_dir: str | os.PathLike[str] | None = None) -> None:
        self.dir = Path(state_dir) if state_dir is not None else default_state_dir()

    def _path(self, family: str) -> Path:
        return self.dir / "rollback" / f"{check_family(family)}.json"

    def get(self, family: str) -> AcceptedRelease | None:
        """The accepted release for ``family``, or None if none yet.

        Raises:
            BundleError(code="state-corrupt"): the state file exists but cannot be read (the
                device refuses rather than forgetting what it accepted).
        """
        p = self._path(family)
        try:
            raw = p.read_bytes()
        except FileNotFoundError:
            return None
        except NotADirectoryError as exc:  # a file where the state folder should be
            raise state_error("rollback state", p, exc) from None
        except OSError as exc:
            raise BundleError("rollback state cannot be read", found=f"{p}: {exc.strerror}",
                              code="state-corrupt") from None
        try:
            d = json.loads(raw)
            rec = AcceptedRelease(str(d["family"]), int(d["release"]), str(d["bundle_id"]),
                                  str(d["accepted_at"]))
        except (ValueError, KeyError, TypeError):
            raise BundleError("rollback state is corrupt", found=str(p),
                              fix="restore it from backup; deleting it disables rollback "
                              "protection for this family", code="state-corrupt") from None
        if rec.family != family:
            raise BundleError("rollback state names another family", found=str(p),
                              code="state-corrupt")
        return rec

    def check(self, m: BundleManifest) -> None:
        """Refuse a bundle older than the accepted release, or a different bundle that reuses it.

        Raises:
            RollbackError: ``rollback`` (lower counter) or ``release-reused``.
        """
        cur = self.get(m.family)
        if cur is None:
            return
        if m.release < cur.release:
            raise RollbackError(
                "bundle is older than one this device already accepted",
                expected=f"release >= {cur.release} for family {m.family!r}",
                found=f"release {m.release}", fix="install the newer bundle; to roll back, "
                "re-seal the older artifact with a higher release counter", code="rollback",
            )
        if m.release == cur.release and m.bundle_id != cur.bundle_id:
            raise RollbackError(
                "another bundle with the same release counter was already accepted",
                expected=f"bundle {cur.bundle_id} or release > {cur.release}",
                found=f"bundle {m.bundle_id}", fix="seal with a higher release counter",
                code="release-reused",
            )

    def ensure_writable(self, family: str) -> None:
        """Prove that a record for ``family`` can be written now: create the folder and write,
        fsync and delete a probe file as large as a record (an installer calls this before it
        switches to a new bundle, so a read-only or full state folder cannot strand it).

        Raises:
            StateError: ``state-unwritable`` or ``state-full``.
        """
        folder = self._path(family).parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
            remove_stale_temps(folder)  # probes and records of killed processes
            fd, tmp = tempfile.mkstemp(prefix=temp_prefix("probe"), suffix=TEMP_SUFFIX,
                                       dir=folder)
        except OSError as exc:
            raise state_error("rollback state", folder, exc) from None
        try:
            os.write(fd, b" " * 512)
            os.fsync(fd)
        except OSError as exc:
            raise state_error("rollback state", folder, exc) from None
        finally:
            os.close(fd)
            try:
                os.unlink(tmp)
            except OSError:
                pass

    def record(self, m: BundleManifest) -> None:
        """Persist ``m`` as the accepted release (after a successful open + smoke inference).

        Check and write happen under an exclusive lock on ``rollback/.<family>.lock`` (POSIX),
        so two processes accepting bundles of one family cannot lower the counter. Recording the
        release already on record writes nothing (it works on a read-only state folder).

        Raises:
            RollbackError: ``m`` is below (or reuses) the accepted release.
            StateError: the state folder cannot be written.
        """
        self.check(m)
        cur = self.get(m.family)
        if cur is not None and cur.release == m.release:
            return
        path = self._path(m.family)
        with locked(path.parent / f".{m.family}.lock", "rollback state"):
            self.check(m)
            cur = self.get(m.family)
            if cur is not None and cur.release == m.release:
                return
            rec = {"family": m.family, "release": m.release, "bundle_id": m.bundle_id,
                   "accepted_at": format_time(datetime.now(timezone.utc)), "version": STATE_VERSION}
            try:
                durable_write(path, canonical_json(rec))
            except OSError as exc:
                raise state_error("rollback state", path, exc) from None


@contextmanager
def locked(lock_path: Path, what: str) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``lock_path`` (POSIX; the folder and the file are created
    if missing; an existing lock file on a read-only filesystem is locked read-only).

    Raises:
        StateError: the lock file cannot be created or opened (``what`` names the state).
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: atomic replace only
        yield
        return
    flags = getattr(os, "O_CLOEXEC", 0)
    try:
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | flags, 0o600)
        except OSError:
            fd = os.open(lock_path, os.O_RDONLY | flags)
    except OSError as exc:
        raise state_error(what, lock_path, exc) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
