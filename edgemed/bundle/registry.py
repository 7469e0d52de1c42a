"""A local SQLite registry of sealed bundles: versions per family, lineage (each bundle's
parent is the previous release of its family), release channels, and an audit log of
promotions and rollbacks.

Refs accepted wherever a bundle is named: a bundle id or a unique prefix of it (>= 6 hex
digits), ``family@release``, or ``family:channel`` (e.g. ``chest-xray:production``).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from edgemed_runtime.sdk import (
    MANIFEST_FILE,
    check_family,
    format_time,
    parse_manifest,
    read_bundle,
    unverified_signed_files,
    verify_bundle,
)

from ..errors import BundleError, InvalidInputError
from .diff import diff_manifests

SCHEMA_VERSION = 1
DEFAULT_CHANNEL = "production"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS bundles (
    bundle_id TEXT PRIMARY KEY,
    family TEXT NOT NULL,
    release INTEGER NOT NULL,
    version TEXT NOT NULL,
    path TEXT NOT NULL,
    manifest TEXT NOT NULL,
    manifest_sha256 TEXT NOT NULL,
    signed_files TEXT NOT NULL,
    parent_id TEXT REFERENCES bundles(bundle_id),
    created TEXT NOT NULL,
    registered_at TEXT NOT NULL,
    verified INTEGER NOT NULL,
    UNIQUE (family, release)
);
CREATE TABLE IF NOT EXISTS channels (
    family TEXT NOT NULL, channel TEXT NOT NULL, bundle_id TEXT NOT NULL REFERENCES bundles(bundle_id),
    updated_at TEXT NOT NULL, PRIMARY KEY (family, channel)
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT, at TEXT NOT NULL, action TEXT NOT NULL,
    family TEXT NOT NULL, channel TEXT, bundle_id TEXT NOT NULL, previous_id TEXT, note TEXT
);
"""
_CHANNEL = re.compile(r"^[a-z][a-z0-9-]{0,31}$")


def default_registry_path() -> Path:
    """``$EDGEMED_REGISTRY``, else ``~/.edgemed/registry.db``."""
    env = os.environ.get("EDGEMED_REGISTRY")
    return Path(env) if env else Path.home() / ".edgemed" / "registry.db"


def _now() -> str:
    return format_time(datetime.now(timezone.utc))


@dataclass(frozen=True)
class RegistryEntry:
    """One registered bundle."""

    bundle_id: str
    family: str
    release: int
    version: str
    path: str
    parent_id: str | None
    created: str
    registered_at: str
    verified: bool
    channels: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"bundle_id": self.bundle_id, "family": self.family, "release": self.release,
                "version": self.version, "path": self.path, "parent_id": self.parent_id,
                "created": self.created, "registered_at": self.registered_at,
                "verified": self.verified, "channels": list(self.channels)}


class Registry:
    """The registry database at ``path`` (created on first use)."""

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path) if path is not None else default_registry_path()

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            con = sqlite3.connect(self.path, timeout=10)
        except sqlite3.Error as exc:
            raise InvalidInputError("cannot open the registry", found=f"{self.path}: {exc}",
                                    code="registry-error") from None
        with closing(con):
            try:
                con.execute("PRAGMA foreign_keys = ON")
                con.executescript(_SCHEMA)
                row = con.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
                if row is None:
                    con.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
                elif int(row[0]) > SCHEMA_VERSION:
                    raise InvalidInputError("registry is newer than this edgemed",
                                            found=row[0], fix="upgrade edgemed", code="registry-error")
                with con:
                    yield con
            except sqlite3.DatabaseError as exc:
                raise InvalidInputError("registry database error", found=f"{self.path}: {exc}",
                                        code="registry-error") from None

    # -- adding ----------------------------------------------------------------------------
    def add(self, bundle: str | os.PathLike[str], *, trust: Any = None) -> RegistryEntry:
        """Register a bundle (verified against ``trust`` when given); idempotent per bundle id.

        Raises:
            BundleError(code="release-exists"): another bundle of the family has that release.
        """
        if trust is not None:
            vb = verify_bundle(bundle, trust=trust, require_hardware=False, check_expiry=False)
            m, signed, files = vb.manifest, dict(vb.statement.resources), vb.files
        else:
            files = read_bundle(bundle)
            m = parse_manifest(files.files[MANIFEST_FILE])
            signed = unverified_signed_files(files.signature)
        raw = files.files[MANIFEST_FILE]
        with self._db() as con:
            row = con.execute("SELECT bundle_id FROM bundles WHERE family=? AND release=?",
                              (m.family, m.release)).fetchone()
            if row is not None and row[0] != m.bundle_id:
                raise BundleError("the registry already has this release of the family",
                                  expected=f"a release other than {m.release}",
                                  found=f"{m.family}@{m.release} = {row[0]}",
                                  fix="seal with a higher --release", code="release-exists")
            parent = con.execute(
                "SELECT bundle_id FROM bundles WHERE family=? AND release<? ORDER BY release DESC "
                "LIMIT 1", (m.family, m.release)).fetchone()
            con.execute(
                "INSERT OR REPLACE INTO bundles VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (m.bundle_id, m.family, m.release, m.version, str(Path(bundle).resolve()),
                 raw.decode(), hashlib.sha256(raw).hexdigest(), json.dumps(signed, sort_keys=True),
                 parent[0] if parent else None, m.created, _now(), int(trust is not None)))
            con.execute("INSERT INTO events (at, action, family, bundle_id) VALUES (?,?,?,?)",
                        (_now(), "add", m.family, m.bundle_id))
        return self.get(m.bundle_id)

    # -- reading ---------------------------------------------------------------------------
    def _entry(self, con: sqlite3.Connection, row: tuple[Any, ...]) -> RegistryEntry:
        chans = tuple(r[0] for r in con.execute(
            "SELECT channel FROM channels WHERE bundle_id=? ORDER BY channel", (row[0],)))
        return RegistryEntry(row[0], row[1], int(row[2]), row[3], row[4], row[5], row[6], row[7],
                             bool(row[8]), chans)

    _COLS = "bundle_id, family, release, version, path, parent_id, created, registered_at, verified"

    def resolve(self, ref: str) -> str:
        """The bundle id ``ref`` names (see the module docstring).

        Raises:
            InvalidInputError(code="unknown-bundle" / "ambiguous-ref").
        """
        with self._db() as con:
            if "@" in ref:
                fam, _, rel = ref.partition("@")
                row = con.execute("SELECT bundle_id FROM bundles WHERE family=? AND release=?",
                                  (fam, int(rel) if rel.isdigit() else -1)).fetchone()
                rows = [row] if row else []
            elif ":" in ref:
                fam, _, ch = ref.partition(":")
                row = con.execute("SELECT bundle_id FROM channels WHERE family=? AND channel=?",
                                  (fam, ch)).fetchone()
                rows = [row] if row else []
            elif re.fullmatch(r"[0-9a-f]{6,32}", ref):
                rows = con.execute("SELECT bundle_id FROM bundles WHERE bundle_id LIKE ?",
                                   (ref + "%",)).fetchall()
            else:
                rows = []
        if not rows:
            raise InvalidInputError("no such bundle in the registry", found=ref,
                                    expected="a bundle id (prefix), family@release or family:channel",
                                    fix="see: edgemed registry list", code="unknown-bundle")
        if len(rows) > 1:
            raise InvalidInputError("bundle id prefix is ambiguous", found=ref,
                                    fix="give more digits", code="ambiguous-ref")
        return str(rows[0][0])

    def get(self, ref: str) -> RegistryEntry:
        """The entry ``ref`` names."""
        bid = self.resolve(ref)
        with self._db() as con:
            row = con.execute(f"SELECT {self._COLS} FROM bundles WHERE bundle_id=?", (bid,)).fetchone()
            return self._entry(con, row)

    def list(self, family: str | None = None) -> list[RegistryEntry]:
        """Every bundle (of ``family``), by family then release."""
        with self._db() as con:
            q = f"SELECT {self._COLS} FROM bundles"
            rows = (con.execute(q + " WHERE family=? ORDER BY release", (family,)) if family else
                    con.execute(q + " ORDER BY family, release")).fetchall()
            return [self._entry(con, r) for r in rows]

    def manifest(self, ref: str) -> tuple[dict[str, Any], dict[str, str]]:
        """``(bundle.json object, {signed path: sha256})`` of a registered bundle."""
        bid = self.resolve(ref)
        with self._db() as con:
            row = con.execute("SELECT manifest, signed_files FROM bundles WHERE bundle_id=?",
                              (bid,)).fetchone()
        return json.loads(row[0]), json.loads(row[1])

    def show(self, ref: str) -> dict[str, Any]:
        """Entry, manifest, lineage (ancestors, newest first) and events of one bundle."""
        e = self.get(ref)
        manifest, signed = self.manifest(e.bundle_id)
        lineage = []
        parent = e.parent_id
        with self._db() as con:
            while parent:
                row = con.execute("SELECT bundle_id, release, version, parent_id FROM bundles "
                                  "WHERE bundle_id=?", (parent,)).fetchone()
                if row is None:
                    break
                lineage.append({"bundle_id": row[0], "release": row[1], "version": row[2]})
                parent = row[3]
            events = [dict(zip(("at", "action", "channel", "previous_id", "note"), r)) for r in
                      con.execute("SELECT at, action, channel, previous_id, note FROM events "
                                  "WHERE bundle_id=? ORDER BY id", (e.bundle_id,))]
        return {**e.to_dict(), "manifest": manifest, "signed_files": signed,
                "lineage": lineage, "events": events}

    def diff(self, a: str, b: str) -> dict[str, Any]:
        """What changed from bundle ``a`` to bundle ``b`` (see ``diff_manifests``)."""
        ma, sa = self.manifest(a)
        mb, sb = self.manifest(b)
        return diff_manifests(ma, mb, signed_a=sa, signed_b=sb)

    # -- channels --------------------------------------------------------------------------
    def promote(self, ref: str, channel: str = DEFAULT_CHANNEL, *, note: str | None = None) -> RegistryEntry:
        """Point ``family:channel`` at a bundle and log it."""
        if not _CHANNEL.match(channel):
            raise InvalidInputError("invalid channel name", expected="lowercase letters, digits, -",
                                    found=channel, code="bad-channel")
        e = self.get(ref)
        with self._db() as con:
            prev = con.execute("SELECT bundle_id FROM channels WHERE family=? AND channel=?",
                               (e.family, channel)).fetchone()
            con.execute("INSERT OR REPLACE INTO channels VALUES (?,?,?,?)",
                        (e.family, channel, e.bundle_id, _now()))
            con.execute("INSERT INTO events (at, action, family, channel, bundle_id, previous_id, note)"
                        " VALUES (?,?,?,?,?,?,?)", (_now(), "promote", e.family, channel,
                                                    e.bundle_id, prev[0] if prev else None, note))
        return self.get(e.bundle_id)

    def rollback(self, family: str, channel: str = DEFAULT_CHANNEL, *,
                 note: str | None = None) -> RegistryEntry:
        """Point ``family:channel`` back at the bundle it held before the current one.

        Devices refuse a lower release counter, so to ship the older model to devices that
        already accepted the newer one, re-seal its artifact with a higher release.

        Raises:
            InvalidInputError(code="nothing-to-roll-back"): the channel has no earlier bundle.
        """
        check_family(family)
        with self._db() as con:
            cur = con.execute("SELECT bundle_id FROM channels WHERE family=? AND channel=?",
                              (family, channel)).fetchone()
            if cur is None:
                raise InvalidInputError("channel has no bundle", found=f"{family}:{channel}",
                                        code="nothing-to-roll-back")
            rows = con.execute("SELECT action, bundle_id, previous_id FROM events WHERE family=? "
                               "AND channel=? AND action IN ('promote','rollback') ORDER BY id",
                               (family, channel)).fetchall()
            history: list[str] = []
            for action, bid, _prev in rows:
                if action == "promote":
                    history.append(bid)
                elif history:
                    history.pop()
            if len(history) < 2:
                raise InvalidInputError("channel has no earlier bundle to roll back to",
                                        found=f"{family}:{channel}", code="nothing-to-roll-back")
            target = history[-2]
            con.execute("INSERT OR REPLACE INTO channels VALUES (?,?,?,?)",
                        (family, channel, target, _now()))
            con.execute("INSERT INTO events (at, action, family, channel, bundle_id, previous_id, note)"
                        " VALUES (?,?,?,?,?,?,?)", (_now(), "rollback", family, channel, target,
                                                    cur[0], note))
        return self.get(target)
