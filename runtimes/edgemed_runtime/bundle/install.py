"""Installing bundles into a device's bundle store, crash-safely and one at a time.

Store layout (``store_dir``)::

    .install.lock                                         held (flock) by the one installing
    <family>/bundles/<release:020d>-<bundle_id>.edgemed   verified bytes, archive form
    <family>/current.json                                 which one ``open_installed`` opens

``install_bundle`` takes an exclusive lock on the store, then verifies and smoke-tests the new
bundle and re-checks its release counter against the recorded one *and* the installed one,
proves the state folder writable, writes the archive (temp file + fsync + rename), switches
``current.json`` atomically, and only then records the release as accepted; the lock is held
across all of it, so two processes installing into one store cannot interleave. A kill at any
point leaves the previous bundle installed and usable: before the switch nothing visible
changed; after it, the new bundle opens (its release is >= the recorded one) and is recorded on
that open. Temporary files carry their process id; a cleanup removes only its own and those of
processes that are gone.
"""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path
from typing import Any

from ..errors import BundleError, EdgemedError, RollbackError
from ..session import Session
from ..util import remove_stale_temps
from .container import pack_archive
from .format import ARCHIVE_SUFFIX, BundleManifest, canonical_json, check_family
from .loader import open_bundle, open_verified, verify_bundle
from .state import RollbackState, durable_write, locked, state_error

CURRENT_FILE = "current.json"
LOCK_FILE = ".install.lock"
_UNCHANGED = "; the installed bundle was not changed"


def _family_dir(store_dir: str | os.PathLike[str], family: str) -> Path:
    return Path(store_dir) / check_family(family)


def _installed_release(fam: Path) -> int | None:
    """The release ``current.json`` names, or None if nothing (readable) is installed."""
    try:
        return int(json.loads((fam / CURRENT_FILE).read_bytes())["release"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _check_installed(fam: Path, m: BundleManifest) -> None:
    cur = _installed_release(fam)
    if cur is not None and m.release < cur:
        raise RollbackError(
            "bundle is older than the one installed in this store",
            expected=f"release >= {cur} for family {m.family!r}", found=f"release {m.release}",
            fix="install the newer bundle; to roll back, re-seal the older artifact with a "
            "higher release counter", code="rollback",
        )


def _store_write(path: Path, data: bytes) -> None:
    try:
        durable_write(path, data)
    except OSError as exc:
        raise state_error("bundle store", path, exc, _UNCHANGED) from None


def install_bundle(
    source: str | os.PathLike[str],
    store_dir: str | os.PathLike[str],
    *,
    trust: Any,
    device_key: Any,
    device_key_password: str | bytes | None = None,
    state_dir: str | os.PathLike[str] | None = None,
    hardware_id: str | None = None,
    target: str | None = None,
    now: datetime | None = None,
) -> Path:
    """Verify, test-open and install a bundle; return the installed archive's path.

    Safe to call from several processes at once (they are serialised by a lock in the store)
    and idempotent (installing the installed bundle again changes nothing that matters).

    Raises:
        the errors of ``open_bundle``; RollbackError also when a newer release is installed;
        StateError when the store or the state folder cannot be written. Nothing is switched
        or recorded when one is raised: the previously installed bundle stays usable.
    """
    store = Path(store_dir)
    state = RollbackState(state_dir)
    with locked(store / LOCK_FILE, "bundle store"):
        vb = verify_bundle(source, trust=trust, now=now, hardware_id=hardware_id, target=target)
        m = vb.manifest
        fam = _family_dir(store, m.family)
        state.check(m)  # under the lock: what another installer recorded is seen
        _check_installed(fam, m)
        sess = open_verified(vb, device_key=device_key, device_key_password=device_key_password,
                             state=state, persist=False)
        sess.close()
        state.ensure_writable(m.family)
        bundles = fam / "bundles"
        remove_stale_temps(bundles)
        remove_stale_temps(fam)
        dest = bundles / f"{m.release:020d}-{m.bundle_id}{ARCHIVE_SUFFIX}"
        _store_write(dest, pack_archive(vb.files.all_files()))
        try:
            previous: bytes | None = (fam / CURRENT_FILE).read_bytes()
        except OSError:
            previous = None
        _store_write(fam / CURRENT_FILE, canonical_json({
            "bundle": f"bundles/{dest.name}", "bundle_id": m.bundle_id, "release": m.release,
            "family": m.family, "version": m.version,
        }))
        try:
            state.record(m)
        except EdgemedError:
            _restore_current(fam, previous)  # nothing was recorded: switch back
            raise
    return dest


def _restore_current(fam: Path, previous: bytes | None) -> None:
    """Best effort: put ``current.json`` back as it was (the new bundle, if it stays because
    this fails too, still opens: its release is >= the recorded one)."""
    try:
        if previous is None:
            (fam / CURRENT_FILE).unlink()
        else:
            durable_write(fam / CURRENT_FILE, previous)
    except OSError:
        pass


def installed_path(store_dir: str | os.PathLike[str], family: str) -> Path:
    """The archive ``current.json`` points at.

    Raises:
        BundleError(code="not-installed"): nothing is installed for ``family``.
    """
    fam = _family_dir(store_dir, family)
    try:
        d = json.loads((fam / CURRENT_FILE).read_bytes())
        rel = str(d["bundle"])
    except FileNotFoundError:
        raise BundleError("no bundle installed for this family", found=family,
                          fix="run install_bundle first", code="not-installed") from None
    except (ValueError, KeyError, TypeError, OSError):
        raise BundleError("current.json of the bundle store is corrupt", found=str(fam),
                          code="state-corrupt") from None
    if not rel.startswith("bundles/") or "/" in rel[8:] or ".." in rel:
        raise BundleError("current.json points outside the store", found=rel, code="state-corrupt")
    return fam / rel


def open_installed(store_dir: str | os.PathLike[str], family: str, **open_args: Any) -> Session:
    """Open the installed bundle of ``family`` (same keyword arguments as ``open_bundle``)."""
    return open_bundle(installed_path(store_dir, family), **open_args)
