"""Reading a bundle's files from a directory or a ``.edgemed`` archive (an uncompressed POSIX
tar of the same files) into memory, refusing links, special files, empty folders, unsafe names,
duplicates and oversized entries before anything is parsed. Files are opened without following
links and without blocking (a FIFO swapped in later is refused, never waited on), and each is
read once: what is hashed is what is decrypted. Also writes the deterministic archive form.
"""

from __future__ import annotations

import errno
import io
import os
import stat
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Mapping

import numpy as np

from ..errors import BundleError, IntegrityError, InvalidInputError
from .format import (
    ARCHIVE_SUFFIX,
    KEYS_DIR,
    MANIFEST_FILE,
    MAX_FILES,
    MAX_KEY_FILE_BYTES,
    MAX_KEY_FILES,
    MAX_MANIFEST_BYTES,
    MAX_PAYLOAD_BYTES,
    MAX_SIGNATURE_BYTES,
    PAYLOAD_DIR,
    SIGNATURE_FILE,
    check_relpath,
)

# A payload file may be at most its plaintext limit plus one 16-byte tag per minimum chunk.
_MAX_FILE_BYTES = MAX_PAYLOAD_BYTES + (MAX_PAYLOAD_BYTES // 4096 + 1) * 16


_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_OPEN_FLAGS = os.O_RDONLY | _NOFOLLOW | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) \
    | getattr(os, "O_BINARY", 0)


def open_regular(path: str | os.PathLike[str], rel: str, *, follow: bool = False) -> BinaryIO:
    """Open a bundle file for reading: never follows a symbolic link (unless ``follow``), never
    blocks (a FIFO or device is refused, not waited on), regular files only. ``rel`` names it
    in errors.

    Raises:
        IntegrityError: ``symlink``, ``not-regular-file``, or ``bad-archive`` (cannot be read).
    """
    try:
        fd = os.open(path, _OPEN_FLAGS & ~_NOFOLLOW if follow else _OPEN_FLAGS)
    except OSError as exc:
        if _NOFOLLOW and exc.errno == errno.ELOOP:
            raise IntegrityError("bundle file became a symbolic link", found=rel,
                                 fix="bundles hold regular files only; get a fresh copy",
                                 code="symlink") from None
        raise IntegrityError("bundle file cannot be read", found=f"{rel}: {exc.strerror}",
                             fix="check the bundle's files and permissions",
                             code="bad-archive") from None
    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        mode = 0
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise IntegrityError("bundle file is not a regular file", expected="a regular file",
                             found=rel, fix="bundles hold regular files only; get a fresh copy",
                             code="not-regular-file")
    return os.fdopen(fd, "rb")


@dataclass(frozen=True)
class FileRef:
    """A payload left on disk by ``read_bundle(lazy=True)``: ``size`` bytes at ``offset`` of
    ``path`` (a payload file, or a member of an archive). The loader reads it once, with
    ``load``, into a private buffer that it then hashes and decrypts."""

    path: Path
    offset: int
    size: int
    rel: str = ""  # its path inside the bundle (for errors)

    def __len__(self) -> int:
        return self.size

    def load(self) -> memoryview:
        """Read it once into a fresh private buffer (a uint8 array from 1 MiB, else a
        bytearray); a file that shrank gives fewer bytes (its digest then fails).

        Raises:
            IntegrityError: ``symlink`` / ``not-regular-file`` (replaced since it was listed:
                never followed, never blocked on), ``bad-archive`` (unreadable).
        """
        buf: Any = np.empty(self.size, dtype=np.uint8) if self.size >= 1 << 20 else bytearray(self.size)
        view = memoryview(buf).cast("B")
        got = 0
        with open_regular(self.path, self.rel or str(self.path)) as f:
            try:
                f.seek(self.offset)
                while got < self.size:
                    k = f.readinto(view[got:])
                    if not k:
                        break
                    got += k
            except OSError as exc:
                raise IntegrityError("bundle file cannot be read", found=f"{self.rel}: "
                                     f"{exc.strerror}", code="bad-archive") from None
        return view[:got]

    def read(self) -> bytes:
        """All of it, as bytes (see ``load``)."""
        return bytes(self.load())


@dataclass(frozen=True)
class BundleFiles:
    """A bundle's bytes, in memory.

    Attributes:
        source: where it was read from.
        archive: True for a ``.edgemed`` file, False for a directory.
        signature: the bytes of ``model.sig``.
        files: every other file outside ``keys/`` (the ones the signature must cover); payloads
            are FileRef when read with ``lazy=True``.
        keys: ``keys/*`` entries, by path (added after signing; authenticated by HPKE + the
            key commitment, not by the signature).
    """

    source: Path
    archive: bool
    signature: bytes
    files: Mapping[str, bytes | FileRef]
    keys: Mapping[str, bytes]

    def all_files(self) -> dict[str, bytes]:
        """Every file of the bundle by path, in memory (for re-packing)."""
        files = {p: b.read() if isinstance(b, FileRef) else b for p, b in self.files.items()}
        return {**files, **self.keys, SIGNATURE_FILE: self.signature}


def _limit(path: str) -> int:
    if path == MANIFEST_FILE:
        return MAX_MANIFEST_BYTES
    if path == SIGNATURE_FILE:
        return MAX_SIGNATURE_BYTES
    if path.startswith(KEYS_DIR + "/"):
        return MAX_KEY_FILE_BYTES
    return _MAX_FILE_BYTES


def _check_entry(path: str, size: int) -> None:
    check_relpath(path, what="file name")
    if size > _limit(path):
        raise IntegrityError(
            "bundle file is larger than the format allows", expected=f"<= {_limit(path)} bytes",
            found=f"{path}: {size} bytes", fix="re-seal the bundle", code="oversized",
        )


def _lazy(rel: str, lazy: bool) -> bool:
    return lazy and rel.startswith(PAYLOAD_DIR + "/")


def _split(source: Path, archive: bool, entries: dict[str, Any]) -> BundleFiles:
    if SIGNATURE_FILE not in entries:
        raise IntegrityError("bundle has no signature", expected=SIGNATURE_FILE, found="missing",
                             fix="sign the bundle with edgemed bundle", code="missing-file")
    if MANIFEST_FILE not in entries:
        raise IntegrityError("bundle has no manifest", expected=MANIFEST_FILE, found="missing",
                             code="missing-file")
    keys = {p: b for p, b in entries.items() if p.startswith(KEYS_DIR + "/")}
    files = {p: b for p, b in entries.items() if p not in keys and p != SIGNATURE_FILE}
    for p in keys:
        if p.count("/") != 1:
            raise IntegrityError("nested folder under keys/", found=p, code="unsafe-path")
    if len(keys) > MAX_KEY_FILES or len(files) > MAX_FILES:
        raise IntegrityError("bundle holds too many files", found=f"{len(entries)} files",
                             code="oversized")
    return BundleFiles(source, archive, entries[SIGNATURE_FILE], files, keys)


# The layout's folders may be empty: keys/ once its last device is removed, payload/ when its
# files are missing (then reported as missing-file). Any other empty folder is refused.
_LAYOUT_FOLDERS = (KEYS_DIR, PAYLOAD_DIR)


def _empty_folder(rel: str) -> IntegrityError:
    return IntegrityError(
        "bundle contains an empty folder", expected="only bundle.json, model.sig, payload/*.enc "
        "and keys/*.json", found=rel + "/", fix="remove the folder, or get a fresh copy of the "
        "bundle", code="empty-folder",
    )


def _read_dir(root: Path, lazy: bool) -> BundleFiles:
    entries: dict[str, Any] = {}

    def walk(d: Path, prefix: str, depth: int) -> None:
        try:
            with os.scandir(d) as it:
                items = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            raise IntegrityError("bundle folder cannot be read", found=f"{prefix or '.'}: "
                                 f"{exc.strerror}", fix="check its permissions",
                                 code="bad-archive") from None
        for e in items:
            rel = prefix + e.name
            st = os.lstat(e.path)
            if stat.S_ISLNK(st.st_mode):
                raise IntegrityError("bundle contains a symbolic link", found=rel,
                                     fix="bundles hold regular files only", code="symlink")
            if stat.S_ISDIR(st.st_mode):
                check_relpath(rel, what="folder name")
                if depth >= 2:
                    raise IntegrityError("bundle folders nest too deep", found=rel,
                                         code="unsafe-path")
                before = len(entries)
                walk(Path(e.path), rel + "/", depth + 1)
                if len(entries) == before and rel not in _LAYOUT_FOLDERS:
                    raise _empty_folder(rel)
                continue
            if not stat.S_ISREG(st.st_mode):
                raise IntegrityError("bundle contains a special file", found=rel,
                                     fix="bundles hold regular files only",
                                     code="not-regular-file")
            _check_entry(rel, st.st_size)
            if len(entries) >= MAX_FILES + MAX_KEY_FILES + 1:
                raise IntegrityError("bundle holds too many files", code="oversized")
            if _lazy(rel, lazy):
                entries[rel] = FileRef(Path(e.path), 0, st.st_size, rel)
                continue
            with open_regular(e.path, rel) as f:
                data = f.read(_limit(rel) + 1)
            _check_entry(rel, len(data))
            entries[rel] = data

    walk(root, "", 0)
    return _split(root, False, entries)


def _read_archive(path: Path, lazy: bool) -> BundleFiles:
    entries: dict[str, Any] = {}
    folders: set[str] = set()
    try:
        with open_regular(path, path.name) as fh, tarfile.open(fileobj=fh, mode="r:") as tf:
            for m in tf:
                name = m.name
                if m.isdir():
                    folders.add(check_relpath(name.rstrip("/"), what="folder name"))
                    continue
                if m.issym():
                    raise IntegrityError("bundle archive contains a symbolic link", found=name,
                                         fix="bundles hold regular files only", code="symlink")
                if m.islnk():
                    raise IntegrityError("bundle archive contains a hard link", found=name,
                                         expected="regular file entries only",
                                         fix="bundles hold regular files only; re-create the "
                                         "archive with edgemed bundle", code="hardlink")
                if not m.isreg():
                    raise IntegrityError("bundle archive contains a special entry", found=name,
                                         fix="bundles hold regular files only",
                                         code="not-regular-file")
                _check_entry(name, m.size)
                if name in entries:
                    raise IntegrityError("bundle archive lists a file twice", found=name,
                                         code="duplicate-entry")
                if len(entries) >= MAX_FILES + MAX_KEY_FILES + 1:
                    raise IntegrityError("bundle holds too many files", code="oversized")
                if _lazy(name, lazy):
                    entries[name] = FileRef(path, m.offset_data, m.size, name)
                    continue
                f = tf.extractfile(m)
                data = f.read() if f is not None else b""
                if len(data) != m.size:
                    raise IntegrityError("bundle archive is truncated", found=name,
                                         code="truncated-archive")
                entries[name] = data
            # after the end-of-archive marker only zero padding (to the 10 KiB record) may follow
            fh.seek(tf.offset)
            rest = fh.read(tarfile.RECORDSIZE + 2 * tarfile.BLOCKSIZE + 1)
            if len(rest) > tarfile.RECORDSIZE + 2 * tarfile.BLOCKSIZE or rest.strip(b"\0"):
                raise IntegrityError("bundle archive has data after its end", found=str(path),
                                     fix="get a fresh copy of the bundle", code="trailing-data")
    except tarfile.TarError as exc:
        raise IntegrityError("bundle archive is not a valid tar file", found=str(exc)[:200],
                             fix="re-create it with edgemed bundle --archive",
                             code="bad-archive") from None
    except (OSError, EOFError) as exc:
        raise IntegrityError("bundle archive cannot be read", found=str(exc)[:200],
                             code="bad-archive") from None
    # a folder entry is skipped, but one that no file is under is an empty folder
    for d in sorted(folders):
        if d not in _LAYOUT_FOLDERS and not any(p.startswith(d + "/") for p in entries):
            raise _empty_folder(d)
    return _split(path, True, entries)


def is_archive(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` is (or links to) a regular file holding a POSIX tar header (``ustar``
    magic), i.e. a bundle archive by its content, whatever its suffix (``read_bundle`` then
    checks it, and refuses a link)."""
    try:
        with open_regular(path, str(path), follow=True) as f:
            head = f.read(tarfile.BLOCKSIZE)
    except IntegrityError:
        return False
    return len(head) == tarfile.BLOCKSIZE and head[257:262] == b"ustar"


def read_bundle(source: str | os.PathLike[str], *, lazy: bool = False) -> BundleFiles:
    """Read a bundle directory or ``.edgemed`` archive into memory (no verification yet);
    with ``lazy``, payloads stay on disk as FileRef (the loader streams them).

    Raises:
        InvalidInputError(code="not-found"): the path does not exist.
        IntegrityError: links, special files, unsafe names, duplicates, oversized entries,
            a missing bundle.json / model.sig, a corrupt archive.
    """
    p = Path(source)
    try:
        st = os.lstat(p)
    except OSError:
        raise InvalidInputError("bundle does not exist", found=str(p), fix="check the path",
                                code="not-found") from None
    if stat.S_ISLNK(st.st_mode):
        raise IntegrityError("bundle path is a symbolic link", found=str(p),
                             fix="pass the bundle itself", code="symlink")
    if stat.S_ISDIR(st.st_mode):
        return _read_dir(p, lazy)
    if stat.S_ISREG(st.st_mode):
        return _read_archive(p, lazy)
    raise BundleError("not a bundle", expected=f"a directory or a {ARCHIVE_SUFFIX} file",
                      found=str(p), code="not-a-bundle")


def pack_archive(files: Mapping[str, bytes]) -> bytes:
    """The ``.edgemed`` form of ``files``: a ustar archive, names sorted, no folders, mode 0644,
    uid/gid 0, mtime 0, so the same files always give the same bytes."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:", format=tarfile.USTAR_FORMAT) as tf:
        for name in sorted(files):
            data = files[name]
            info = tarfile.TarInfo(check_relpath(name))
            info.size = len(data)
            info.mode = 0o644
            info.mtime = 0
            info.uname = info.gname = ""
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()

