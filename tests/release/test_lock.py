"""One release per folder: the lock refuses a second holder at once (naming pid, host, start) or
waits for it; two concurrent `edgemed release` processes on one folder: exactly one proceeds,
the other exits 6 (busy), and the registry records the bundle that is on disk; a re-run that
would re-seal a registered release under the same counter is refused and leaves both alone."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from pathlib import Path

import pytest

from edgemed.bundle import Registry
from edgemed.release.lock import BusyError, hold

from .conftest import cli


def test_second_holder_is_refused_with_the_holder_named(tmp_path: Path) -> None:
    lock = tmp_path / "rel" / ".release.lock"
    with hold(lock, what="first run"):
        with pytest.raises(BusyError) as ei:
            with hold(lock, what="second run"):
                pass  # pragma: no cover - never entered
    e = ei.value
    assert e.code == "locked" and e.exit_code == 6
    assert f"pid {os.getpid()}" in e.found and socket.gethostname() in e.found
    assert "first run" in e.found and "--wait" in e.fix
    with hold(lock, what="third run"):  # released when the first block ended
        assert json.loads(lock.read_text())["what"] == "third run"


def test_wait_blocks_until_the_holder_is_done(tmp_path: Path) -> None:
    lock = tmp_path / ".release.lock"
    order: list[str] = []
    said: list[str] = []
    with hold(lock, what="holder"):
        t = threading.Thread(target=lambda: _wait_then_note(lock, order, said))
        t.start()
        time.sleep(0.5)
        order.append("holder done")
    t.join(10)
    assert order == ["holder done", "waiter in"]
    assert said and "waiting for pid" in said[0]


def _wait_then_note(lock: Path, order: list[str], said: list[str]) -> None:
    with hold(lock, what="waiter", wait=True, say=said.append):
        order.append("waiter in")


def test_two_concurrent_releases_one_proceeds_registry_matches_disk(quick_project: Path) -> None:
    procs = [cli("release", str(quick_project), "--json") for _ in range(2)]
    outs = [p.communicate(timeout=900) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 6], [(p.returncode, o[1][-800:]) for p, o in zip(procs, outs)]
    loser = next(o for p, o in zip(procs, outs) if p.returncode == 6)
    err = json.loads(loser[0])["error"]
    assert err["code"] == "locked" and "pid" in err["found"] and "Traceback" not in loser[1]
    rel = quick_project.parent / "rel"
    result = json.loads((rel / "release.json").read_text())
    bundle = Path(result["targets"][0]["bundle"])
    on_disk = json.loads((bundle / "bundle.json").read_text())["bundle_id"]
    entries = Registry(rel / "registry.sqlite").list()
    assert [e.bundle_id for e in entries] == [on_disk]
    assert result["targets"][0]["registry"]["bundle_id"] == on_disk
    # a forced re-run would re-seal release 1: refused before sealing, both left as they were
    again = cli("release", str(quick_project), "--force", "--json")
    out, _ = again.communicate(timeout=900)
    assert again.returncode == 5, out[-800:]
    t = json.loads(out)["targets"][0]
    assert t["status"] == "failed" and t["error"]["code"] == "release-exists"
    assert json.loads((bundle / "bundle.json").read_text())["bundle_id"] == on_disk
    assert [e.bundle_id for e in Registry(rel / "registry.sqlite").list()] == [on_disk]
