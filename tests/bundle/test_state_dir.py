"""A state folder (or bundle store) that cannot be written gives a typed StateError naming the
path and the fix -- exit code 2 from ``edgemed-run`` -- and the bundle installed before stays
installed and usable.

Tests run as root here and root ignores permission bits, so writes are made to fail for real:
a path under /proc, a file where a folder is expected, and (where mounting is permitted) a
full 64 KiB tmpfs and a tmpfs remounted read-only.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterator

import pytest

import edgemed_runtime as rt
from edgemed_runtime.__main__ import main as run_main
from edgemed_runtime.bundle import RollbackState, install_bundle, installed_path, open_installed
from edgemed_runtime.errors import BundleError, StateError

from .conftest import CREATED, Keys, SealFn, open_args

PROC_STATE = Path("/proc/self/edgemed-state")


def _assert_state_error(exc: StateError, path: Path, code: str = "state-unwritable") -> None:
    assert isinstance(exc, BundleError) and exc.code == code
    assert str(path) in (exc.found or ""), exc.found
    assert exc.expected and exc.fix and exc.exit_code == 2


def _installed_release(store: Path, keys: Keys, state: Path) -> int:
    with open_installed(store, "tiny", **open_args(keys, state)) as s:
        return int(s.info["release"])


@pytest.mark.parametrize("bad", ["proc", "file-in-the-way"])
def test_unwritable_state_dir_keeps_previous_bundle(bad: str, keys: Keys,
                                                    pristine: dict[str, Path], tmp_path: Path) -> None:
    store, good = tmp_path / "store", tmp_path / "state"
    install_bundle(pristine["r1"], store, **open_args(keys, good))
    before = (store / "tiny" / "current.json").read_bytes()
    if bad == "proc":
        state = PROC_STATE
    else:
        state = tmp_path / "not-a-folder"
        state.write_bytes(b"")
    with pytest.raises(StateError) as ei:
        install_bundle(pristine["r2"], store, **open_args(keys, state))
    _assert_state_error(ei.value, state)
    # nothing switched, nothing half-written; the previous bundle opens
    assert (store / "tiny" / "current.json").read_bytes() == before
    assert not list(store.rglob("*.tmp"))
    assert _installed_release(store, keys, good) == 1
    # opening (which records the release) refuses the same way, typed
    with pytest.raises(StateError) as ei:
        rt.open(pristine["r2"], **open_args(keys, state))
    _assert_state_error(ei.value, state)


def test_unwritable_store(keys: Keys, pristine: dict[str, Path], tmp_path: Path) -> None:
    store = Path("/proc/self/edgemed-store")
    with pytest.raises(StateError) as ei:
        install_bundle(pristine["r1"], store, **open_args(keys, tmp_path / "state"))
    _assert_state_error(ei.value, store)
    assert RollbackState(tmp_path / "state").get("tiny") is None


@pytest.fixture(scope="module")
def fresh(make_bundle: SealFn, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bundle valid against the real clock (``edgemed-run`` has no --now)."""
    d = tmp_path_factory.mktemp("fresh")
    created = min(CREATED, datetime.now(timezone.utc) - timedelta(days=1))
    return make_bundle(d / "b", 1, created=created,
                       expires=datetime.now(timezone.utc) + timedelta(days=365))


@pytest.mark.parametrize("command", ["run", "verify"])
def test_edgemed_run_exit_2(command: str, fresh: Path, keys: Keys, tmp_path: Path,
                            capsys: pytest.CaptureFixture[str]) -> None:
    state = PROC_STATE if command == "run" else tmp_path / "file"
    if command == "verify":
        state.write_bytes(b"")  # verify does not record; a file in the way still cannot be read
    dcm = tmp_path / "x.dcm"
    dcm.write_bytes(b"not opened: the bundle is refused first")
    argv = [command, str(fresh), "--trust", str(keys.publisher.public_path), "--device-key",
            str(keys.device.private_path), "--state-dir", str(state)]
    code = run_main(argv + ([str(dcm)] if command == "run" else []) + ["--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 2, out
    assert out["error"]["type"] == "StateError" and str(state) in out["error"]["found"]


# -- a real full / read-only filesystem (needs mount permission) ---------------------------------

@pytest.fixture()
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / f"tmpfs-{uuid.uuid4().hex[:8]}"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not permitted here: {r.stderr.strip()[:100]}")
    try:
        yield mnt
    finally:
        if subprocess.run(["umount", str(mnt)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def _fill(folder: Path) -> Path:
    """Fill the filesystem of ``folder`` until ENOSPC; return the filler file."""
    filler = folder / "filler"
    with open(filler, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return filler


def test_full_state_filesystem(tmpfs: Path, keys: Keys, pristine: dict[str, Path],
                               tmp_path: Path) -> None:
    store, state = tmp_path / "store", tmpfs / "state"
    install_bundle(pristine["r1"], store, **open_args(keys, state))
    filler = _fill(tmpfs)
    with pytest.raises(StateError) as ei:
        install_bundle(pristine["r2"], store, **open_args(keys, state))
    _assert_state_error(ei.value, state / "rollback", code="state-full")
    assert "free space" in (ei.value.fix or "")
    assert _installed_release(store, keys, state) == 1
    assert RollbackState(state).get("tiny").release == 1  # type: ignore[union-attr]
    filler.unlink()  # space again: the install goes through
    p = install_bundle(pristine["r2"], store, **open_args(keys, state))
    assert installed_path(store, "tiny") == p and _installed_release(store, keys, state) == 2


def test_read_only_state_filesystem(tmpfs: Path, keys: Keys, pristine: dict[str, Path],
                                    tmp_path: Path) -> None:
    store, state = tmp_path / "store", tmpfs / "state"
    install_bundle(pristine["r1"], store, **open_args(keys, state))
    subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], check=True)
    with pytest.raises(OSError):
        (tmpfs / "probe").write_bytes(b"")  # really read-only, even for root
    with pytest.raises(StateError) as ei:
        install_bundle(pristine["r2"], store, **open_args(keys, state))
    _assert_state_error(ei.value, state / "rollback")
    # the recorded bundle still opens on a read-only state folder (nothing to write)
    assert _installed_release(store, keys, state) == 1
    assert os.path.exists(state / "rollback" / "tiny.json")
