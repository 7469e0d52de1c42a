"""Small helpers: atomic writes, bounded reads of regular files, hashing."""

from __future__ import annotations

import hashlib
import os
import stat
import tempfile
from pathlib import Path

from .errors import InvalidInputError

TEMP_SUFFIX = ".tmp"


def temp_prefix(name: str, pid: int | None = None) -> str:
    """Prefix of the temporary files ``atomic_write_bytes`` makes for ``name`` in process ``pid``
    (default: this one): ``.<name>.<pid>.`` -- so a cleanup can tell its own leftovers apart."""
    return f".{name}.{os.getpid() if pid is None else pid}."


def temp_owner(filename: str) -> int | None:
    """The pid a temporary file name made by ``atomic_write_bytes`` carries, or None if it is
    not such a name."""
    if not (filename.startswith(".") and filename.endswith(TEMP_SUFFIX)):
        return None
    parts = filename[1:-len(TEMP_SUFFIX)].split(".")
    return int(parts[-2]) if len(parts) >= 3 and parts[-2].isdigit() else None


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # our own leftovers (from an earlier, failed call) are not in flight
    if os.name == "nt":  # pragma: no cover - os.kill(pid, 0) would terminate it
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists
        return True
    return True


def remove_stale_temps(folder: str | os.PathLike[str]) -> None:
    """Delete the temporary files ``atomic_write_bytes`` left in ``folder`` from this process
    or from processes that are gone; never a live process's in-flight file, nor a file whose
    name carries no pid. Errors are ignored (a leftover is harmless)."""
    try:
        names = os.listdir(folder)
    except OSError:
        return
    for name in names:
        pid = temp_owner(name)
        if pid is not None and not _alive(pid):
            try:
                os.unlink(os.path.join(folder, name))
            except OSError:
                pass


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, mode: int | None = None) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename.

    A crash leaves either the old file or the new one, never a half-written file. ``mode``
    (e.g. 0o600 for private keys) is set before any byte is written. The temporary name,
    ``.<name>.<pid>.<random>.tmp``, is unique per process and call (see ``temp_owner``).

    Raises:
        OSError: the folder cannot be created or written (callers map it to a typed error).
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(p.name), suffix=TEMP_SUFFIX, dir=p.parent)
    try:
        if mode is not None:
            os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a folder"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a pipe (FIFO)"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def read_regular_file(path: str | os.PathLike[str], limit: int, what: str) -> bytes:
    """Read a whole regular file of at most ``limit`` bytes (keys, trust anchors, passphrases).

    The file is opened non-blocking (a FIFO cannot stall the open) and checked with ``fstat``
    on the open descriptor; at most ``limit + 1`` bytes are ever read, so ``/dev/zero`` or a
    file that grows cannot exhaust memory.

    Args:
        path: the file.
        limit: the largest size accepted, in bytes.
        what: what the file is, for the error message ("device private key").
    Returns:
        the file's bytes.
    Raises:
        InvalidInputError: ``not-found`` (missing), ``unreadable`` (cannot be opened or read),
            ``not-a-regular-file`` (a device, pipe, socket or folder), ``too-large``.
    """
    p = os.fspath(path)
    try:
        fd = os.open(p, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
                     | getattr(os, "O_BINARY", 0))
    except FileNotFoundError:
        raise InvalidInputError(f"{what} file not found", found=p, fix="check the path",
                                code="not-found") from None
    except OSError as exc:
        raise InvalidInputError(f"{what} file cannot be opened", expected="a readable file",
                                found=f"{p}: {exc.strerror}", fix="check the path and its "
                                "permissions", code="unreadable") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise InvalidInputError(f"{what} is not a regular file", expected="a regular file",
                                    found=f"{p} is {_kind(st.st_mode)}", fix="pass the path of "
                                    f"the {what} file itself", code="not-a-regular-file")
        too_large = InvalidInputError(f"{what} file is too large", expected=f"at most {limit} "
                                      "bytes", found=p, fix=f"pass the {what} file itself",
                                      code="too-large")
        if st.st_size > limit:
            raise too_large
        chunks: list[bytes] = []
        left = limit + 1
        while left > 0:
            try:
                block = os.read(fd, min(left, 1 << 16))
            except BlockingIOError:  # pragma: no cover - regular files do not block
                continue
            except OSError as exc:
                raise InvalidInputError(f"{what} file cannot be read", found=f"{p}: "
                                        f"{exc.strerror}", code="unreadable") from None
            if not block:
                break
            chunks.append(block)
            left -= len(block)
        if left <= 0:
            raise too_large
        return b"".join(chunks)
    finally:
        os.close(fd)


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    """Hex SHA-256 of bytes."""
    return hashlib.sha256(data).hexdigest()
