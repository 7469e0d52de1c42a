"""The durable, encrypted spool: blobs (received instances, results) and the journal.

Layout of ``spool.dir``::

    blobs/<name>.enc     nonce (12 bytes) || AES-256-GCM(key, nonce, data, aad=name)
    journal.jsonl        one JSON object per line, fsync'd before the C-STORE is answered

Every blob is written to a temporary file, fsync'd, renamed and its folder fsync'd; only then
is the journal line appended (and fsync'd), so a journal line always names a complete blob. The
journal holds no PHI: series and instances are named by keyed hashes (HMAC-SHA256 under a key
derived from the spool key), never by their UIDs. A torn last line (kill -9 mid-write) is
ignored on replay.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from ..errors import EdgemedError, InvalidInputError

KEY_BYTES = 32
NONCE = 12
JOURNAL = "journal.jsonl"
COMPACT_TMP = "journal.jsonl.compact.tmp"


class SpoolFullError(EdgemedError):
    """The spool has no room for what was offered (budget or disk)."""

    default_code = "spool-full"


def load_or_create_key(path: Path) -> bytes:
    """The spool key from ``path`` (32 raw bytes); created with mode 0600 when absent.

    Raises:
        InvalidInputError: ``bad-spool-key`` (wrong length, unreadable).
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    except OSError as exc:
        raise InvalidInputError("the spool key cannot be created", code="bad-spool-key",
                                found=f"{path}: {exc.strerror}", fix="check the folder") from None
    else:
        with os.fdopen(fd, "wb") as f:
            f.write(os.urandom(KEY_BYTES))
            f.flush()
            os.fsync(f.fileno())
    try:
        key = path.read_bytes()
    except OSError as exc:
        raise InvalidInputError("the spool key cannot be read", code="bad-spool-key",
                                found=f"{path}: {exc.strerror}") from None
    if len(key) != KEY_BYTES:
        raise InvalidInputError("the spool key has the wrong length", code="bad-spool-key",
                                expected=f"{KEY_BYTES} bytes", found=f"{len(key)} bytes",
                                fix="restore the key file (without it the spool is unreadable)")
    return key


def _fsync_dir(d: Path) -> None:
    fd = os.open(d, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _drop_torn_tail(path: Path) -> None:
    """Cut a journal back to its last complete line (a kill -9 can leave half a line)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return
    if data and not data.endswith(b"\n"):
        with open(path, "r+b") as f:
            f.truncate(data.rfind(b"\n") + 1)
            f.flush()
            os.fsync(f.fileno())


@dataclass
class SeriesState:
    """What the journal says about one series (by its hashed id ``sid``)."""

    sid: str
    instances: dict[str, str] = field(default_factory=dict)  # hashed SOP uid -> blob name
    grouped: bool = False
    done: str | None = None  # skipped / failed / delivered / dead-letter
    results: dict[str, str] = field(default_factory=dict)  # bundle id -> result blob
    delivered: set[str] = field(default_factory=set)  # bundle ids
    version: int = 1  # > 1: re-opened by late instances (grouping.late = "rerun")
    kept_until: float = 0.0  # wall time: a finished series' instances kept for a re-run
    late: bool = False  # a late instance arrived while the series was being processed


class Spool:
    """Encrypted blobs plus the journal; thread-safe.

    Args:
        root: the spool folder (created).
        key: the 32-byte spool key.
        max_bytes: the budget of blob bytes on disk.
    """

    def __init__(self, root: Path, key: bytes, max_bytes: int, *,
                 journal_max_bytes: int = 16 << 20) -> None:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        self.root = root
        self.blobs = root / "blobs"
        self.blobs.mkdir(parents=True, exist_ok=True)
        self._aead = AESGCM(key)
        self._hkey = hmac.new(key, b"edgemed-node/uid-hash", hashlib.sha256).digest()
        self.max_bytes, self.journal_max_bytes = max_bytes, journal_max_bytes
        self._lock = threading.Lock()
        for p in self.blobs.glob("*.tmp*"):
            p.unlink(missing_ok=True)
        (root / COMPACT_TMP).unlink(missing_ok=True)  # a compaction a kill cut short
        _drop_torn_tail(root / JOURNAL)
        self._journal = open(root / JOURNAL, "ab", buffering=0)  # noqa: SIM115 - held open
        self.compactions = 0
        self._compact_at = journal_max_bytes
        with self._lock:
            try:
                self._compact_locked(drop_orphans=True)
            except OSError:  # a full disk: start with the journal as it is
                (root / COMPACT_TMP).unlink(missing_ok=True)
        self.used = sum(p.stat().st_size for p in self.blobs.glob("*.enc"))

    def uid_hash(self, uid: str) -> str:
        """The keyed hash naming a UID in the journal, audit log and blob names (24 hex)."""
        return hmac.new(self._hkey, uid.encode(), hashlib.sha256).hexdigest()[:24]

    # -- blobs ---------------------------------------------------------------------------
    def reserve(self, n: int) -> None:
        """Raise SpoolFullError unless ``n`` more bytes fit the budget."""
        with self._lock:
            if self.used + n > self.max_bytes:
                raise SpoolFullError("the spool is full", expected=f"<= {self.max_bytes} bytes",
                                     found=f"{self.used} used + {n} offered",
                                     fix="free the destination backlog or raise spool.max_bytes")

    def put(self, name: str, data: bytes) -> None:
        """Encrypt ``data`` into blob ``name`` durably.

        Raises:
            SpoolFullError: over the budget, or the disk is full / not writable.
        """
        ct = self._encrypt(name, data)
        self.reserve(len(ct))
        dest = self.blobs / f"{name}.enc"
        tmp = self.blobs / f"{name}.tmp{os.getpid()}.{threading.get_ident()}"
        try:
            with open(tmp, "wb") as f:
                f.write(ct)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, dest)
            _fsync_dir(self.blobs)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise SpoolFullError("the spool cannot be written", found=exc.strerror or "OSError",
                                 fix="free disk space in the spool folder") from None
        with self._lock:
            self.used += len(ct)

    def put_outside(self, name: str, data: bytes, folder: Path) -> Path:
        """Encrypt ``data`` as blob ``name`` straight into ``folder`` (the dead-letter folder,
        when the spool itself is full); not counted in the spool's budget."""
        folder.mkdir(parents=True, exist_ok=True)
        dest = folder / f"{name}.enc"
        tmp = folder / f"{name}.tmp{os.getpid()}"
        with open(tmp, "wb") as f:
            f.write(self._encrypt(name, data))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, dest)
        _fsync_dir(folder)
        return dest

    def _encrypt(self, name: str, data: bytes) -> bytes:
        nonce = os.urandom(NONCE)
        return nonce + self._aead.encrypt(nonce, data, name.encode())

    def get(self, name: str) -> bytes:
        """Decrypt blob ``name``.

        Raises:
            InvalidInputError: ``spool-corrupt`` (missing, or fails authentication).
        """
        from cryptography.exceptions import InvalidTag

        try:
            raw = (self.blobs / f"{name}.enc").read_bytes()
            return self._aead.decrypt(raw[:NONCE], raw[NONCE:], name.encode())
        except (OSError, InvalidTag, ValueError):
            raise InvalidInputError("a spool file is missing or does not authenticate",
                                    code="spool-corrupt", found=name,
                                    fix="the spool was tampered with or the key changed") from None

    def move_out(self, name: str, folder: Path) -> Path:
        """Move blob ``name`` (still encrypted) to ``folder`` (the dead-letter folder)."""
        folder.mkdir(parents=True, exist_ok=True)
        src = self.blobs / f"{name}.enc"
        dest = folder / src.name
        size = src.stat().st_size
        os.replace(src, dest)
        _fsync_dir(folder)
        with self._lock:
            self.used -= size
        return dest

    def move_in(self, path: Path) -> str:
        """Move an encrypted blob file back into the spool (from the dead-letter folder);
        returns its blob name."""
        size = path.stat().st_size
        os.replace(path, self.blobs / path.name)
        _fsync_dir(self.blobs)
        with self._lock:
            self.used += size
        return path.name[: -len(".enc")]

    def delete(self, name: str) -> None:
        """Remove blob ``name`` (after delivery)."""
        p = self.blobs / f"{name}.enc"
        try:
            size = p.stat().st_size
            p.unlink()
        except FileNotFoundError:
            return
        with self._lock:
            self.used -= size

    # -- journal -------------------------------------------------------------------------
    def log(self, event: str, **fields: Any) -> None:
        """Append one journal line and fsync it.

        Raises:
            SpoolFullError: the disk is full or not writable (a partial line is cut on start).
        """
        line = json.dumps({"e": event, **fields}, sort_keys=True).encode() + b"\n"
        with self._lock:
            try:
                self._journal.write(line)
                os.fsync(self._journal.fileno())
            except OSError as exc:
                raise SpoolFullError("the journal cannot be written",
                                     found=exc.strerror or "OSError",
                                     fix="free disk space in the spool folder") from None
            if self._journal.tell() > self._compact_at:
                try:
                    self._compact_locked(drop_orphans=False)
                except OSError:
                    pass  # no room for the compacted copy: the journal stays as it is

    def compact(self) -> int:
        """Rewrite the journal as the shortest one that replays to the same states; returns
        its size in bytes. Crash-safe: written to a temporary file, fsync'd, renamed over the
        journal, folder fsync'd (a kill leaves the old or the new journal, never half of one).
        """
        with self._lock:
            return self._compact_locked(drop_orphans=False)

    def _compact_locked(self, *, drop_orphans: bool) -> int:
        states = self._replay_file()
        lines = [json.dumps(r, sort_keys=True).encode() + b"\n" for r in compacted(states)]
        tmp, path = self.root / COMPACT_TMP, self.root / JOURNAL
        with open(tmp, "wb") as f:
            f.writelines(lines)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(self.root)
        self._journal.close()
        self._journal = open(path, "ab", buffering=0)  # noqa: SIM115 - held open
        self.compactions += 1
        # a journal whose live part alone is near the bound is not rewritten at every line
        self._compact_at = max(self.journal_max_bytes, 2 * sum(len(x) for x in lines))
        if drop_orphans:  # at start only: no blob is being written now
            self._drop_orphans(states)
        return sum(len(x) for x in lines)

    def _drop_orphans(self, states: dict[str, SeriesState]) -> None:
        """Remove the blobs a kill left behind: instances of finished series and results
        journalled delivered (a result of a dead-letter series is kept: --redeliver)."""
        for p in self.blobs.glob("*.enc"):
            kind, _, rest = p.name[: -len(".enc")].partition("-")
            sid, _, tail = rest.partition("-")
            st = states.get(sid)
            if st is None and kind == "i":  # never journalled: its C-STORE was not answered
                p.unlink(missing_ok=True)
            if st is None or st.done is None or (kind == "i" and st.kept_until):
                continue
            if kind == "i" or (kind == "r" and tail in st.delivered):
                p.unlink(missing_ok=True)

    def records(self) -> Iterator[dict[str, Any]]:
        """The journal's complete lines, in order (a torn last line is skipped)."""
        with open(self.root / JOURNAL, "rb") as f:
            for line in f:
                if not line.endswith(b"\n"):
                    break
                try:
                    yield json.loads(line)
                except ValueError:
                    continue

    def replay(self) -> dict[str, SeriesState]:
        """Every series' state from the journal."""
        with self._lock:
            return self._replay_file()

    def _replay_file(self) -> dict[str, SeriesState]:
        out: dict[str, SeriesState] = {}
        for r in self.records():
            s = out.setdefault(r["s"], SeriesState(r["s"]))
            e = r["e"]
            if e == "received":
                s.instances.setdefault(r["i"], r["f"])
            elif e == "grouped":
                s.grouped = True
            elif e == "inferred":
                s.results[r["b"]] = r["f"]
            elif e == "delivered":
                s.delivered.add(r["b"])
                s.done = "delivered"
            elif e in ("skipped", "failed", "dead-letter"):
                s.done = e
            else:
                _replay_rerun(s, r)
        return out

    def close(self) -> None:
        """Close the journal."""
        self._journal.close()


def _replay_rerun(s: SeriesState, r: dict[str, Any]) -> None:
    """The journal events of ``grouping.late = "rerun"``: retained, purged, late, reopened."""
    e = r["e"]
    if e == "retained":
        s.kept_until = float(r["until"])
    elif e == "purged":
        s.kept_until, s.instances = 0.0, {}
    elif e == "late":
        s.late = True
    elif e == "reopened":
        s.version, s.done, s.grouped, s.late = int(r["v"]), None, False, False
        s.results, s.delivered, s.kept_until = {}, set(), 0.0


def _rerun_lines(sid: str, s: SeriesState) -> Iterator[dict[str, Any]]:
    if s.version > 1:
        yield {"e": "reopened", "s": sid, "v": s.version}
    if s.done is not None and s.kept_until:
        for iid, f in s.instances.items():
            yield {"e": "received", "s": sid, "i": iid, "f": f}


def compacted(states: dict[str, SeriesState]) -> Iterator[dict[str, Any]]:
    """The journal records that replay to ``states`` (in the same series order): a finished
    series keeps one line per delivered bundle id (or its final state), an open one its
    received / grouped / inferred lines."""
    for sid, s in states.items():
        yield from _rerun_lines(sid, s)
        if s.done is not None:
            for b in sorted(s.delivered):
                yield {"e": "delivered", "s": sid, "b": b}
            if s.done != "delivered":
                yield {"e": s.done, "s": sid}
            if s.kept_until:
                yield {"e": "retained", "s": sid, "until": s.kept_until}
            if s.late:
                yield {"e": "late", "s": sid}
            continue
        for iid, f in s.instances.items():
            yield {"e": "received", "s": sid, "i": iid, "f": f}
        if s.grouped:
            yield {"e": "grouped", "s": sid}
        for b, f in s.results.items():
            if b not in s.delivered:
                yield {"e": "inferred", "s": sid, "b": b, "f": f}
