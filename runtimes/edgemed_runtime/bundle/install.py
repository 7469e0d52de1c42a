"""Installing bundles into a device's bundle store, crash-safely.

Store layout (``store_dir``)::

    <family>/bundles/<release:020d>-<bundle_id>.edgemed   verified bytes, archive form
    <family>/current.json                                 which one ``open_installed`` opens

``install_bundle`` verifies and smoke-tests the new bundle without touching state, writes the
archive (temp file + fsync + rename), switches ``current.json`` atomically, and only then records
the release as accepted. A kill at any point leaves the previous bundle installed and usable:
before the switch nothing visible changed; after it, the new bundle opens (its release is >= the
recorded one) and is recorded on that open.
"""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path
from typing import Any

from ..errors import BundleError
from ..session import Session
from .container import pack_archive
from .format import ARCHIVE_SUFFIX, canonical_json, check_family
from .loader import open_bundle, open_verified, verify_bundle
from .state import RollbackState, durable_write

CURRENT_FILE = "current.json"


def _family_dir(store_dir: str | os.PathLike[str], family: str) -> Path:
    return Path(store_dir) / check_family(family)


def _cleanup_temp(folder: Path) -> None:
    if not folder.is_dir():
        return
    for p in folder.iterdir():
        if p.name.startswith(".") and p.name.endswith(".tmp"):
            try:
                p.unlink()
            except OSError:
                pass


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

    Raises:
        the errors of ``open_bundle``; nothing is installed or recorded when one is raised.
    """
    vb = verify_bundle(source, trust=trust, now=now, hardware_id=hardware_id, target=target)
    state = RollbackState(state_dir)
    sess = open_verified(vb, device_key=device_key, device_key_password=device_key_password,
                         state=state, persist=False)
    sess.close()
    m = vb.manifest
    fam = _family_dir(store_dir, m.family)
    bundles = fam / "bundles"
    _cleanup_temp(bundles)
    _cleanup_temp(fam)
    dest = bundles / f"{m.release:020d}-{m.bundle_id}{ARCHIVE_SUFFIX}"
    durable_write(dest, pack_archive(vb.files.all_files()))
    durable_write(fam / CURRENT_FILE, canonical_json({
        "bundle": f"bundles/{dest.name}", "bundle_id": m.bundle_id, "release": m.release,
        "family": m.family, "version": m.version,
    }))
    state.record(m)
    return dest


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
