"""Two device processes install bundles of one family into one store at the same moment.

Each round starts both installs at one agreed instant (two long-lived worker processes, so the
imports are paid once). Afterwards the store must hold a usable model -- ``open_installed``
opens release 3 -- and every failure must be one of the project's typed errors (a refused r2
raises RollbackError). Before installs were serialised, r3 + r2 left ``current.json`` on r2
while the rollback state said 3 (10 of 20 rounds), and one process's temp cleanup deleted the
other's in-flight file (a raw FileNotFoundError).
"""

from __future__ import annotations

import json
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from edgemed_runtime.bundle import RollbackState, open_installed
from edgemed_runtime.errors import EdgemedError

from .conftest import Keys, SealFn, open_args

ROUNDS = 20
STEP_TIMEOUT_S = 60.0

WORKER = r"""
import json, sys, time
from datetime import datetime, timezone
import edgemed_runtime.bundle as b
from edgemed_runtime.errors import EdgemedError
now = datetime(2026, 6, 1, tzinfo=timezone.utc)
print(json.dumps({"ready": True}), flush=True)
for line in sys.stdin:
    job = json.loads(line)
    time.sleep(max(0.0, job["start_at"] - time.time()))
    try:
        b.install_bundle(job["bundle"], job["store"], trust=job["trust"],
                         device_key=job["device_key"], state_dir=job["state"], now=now)
        res = {"ok": True}
    except EdgemedError as exc:
        res = {"ok": False, "typed": True, "type": type(exc).__name__, "code": exc.code}
    except Exception as exc:
        res = {"ok": False, "typed": False, "type": type(exc).__name__, "msg": str(exc)[:300]}
    print(json.dumps(res), flush=True)
"""


def _read(proc: subprocess.Popen[str]) -> dict[str, Any]:
    """One JSON line from a worker, or fail the test after STEP_TIMEOUT_S (never hang)."""
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], STEP_TIMEOUT_S)
    assert ready, "worker did not answer in time"
    line = proc.stdout.readline()
    assert line, f"worker died (rc={proc.poll()})"
    return json.loads(line)


@pytest.fixture(scope="module")
def workers() -> Iterator[list[subprocess.Popen[str]]]:
    procs = [subprocess.Popen([sys.executable, "-c", WORKER], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True) for _ in range(2)]
    try:
        for p in procs:
            assert _read(p) == {"ready": True}
        yield procs
    finally:
        for p in procs:
            if p.stdin is not None:
                p.stdin.close()
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


@pytest.fixture(scope="module")
def r3(make_bundle: SealFn, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("r3") / "r3", 3)


@pytest.mark.parametrize("other", ["r2", "r3"])
def test_two_processes_install_at_once(other: str, workers: list[subprocess.Popen[str]],
                                       keys: Keys, pristine: dict[str, Path], r3: Path,
                                       tmp_path: Path) -> None:
    bundles = {"r2": pristine["r2"], "r3": r3}
    unusable: dict[int, list[str]] = {}
    untyped: list[dict[str, Any]] = []
    refused: list[dict[str, Any]] = []
    for i in range(ROUNDS):
        store, state = tmp_path / f"{i}" / "store", tmp_path / f"{i}" / "state"
        pair = [r3, bundles[other]] if i % 2 == 0 else [bundles[other], r3]
        start_at = time.time() + 0.2
        for proc, bundle in zip(workers, pair):
            assert proc.stdin is not None
            proc.stdin.write(json.dumps({
                "bundle": str(bundle), "store": str(store), "state": str(state),
                "trust": str(keys.publisher.public_path),
                "device_key": str(keys.device.private_path), "start_at": start_at}) + "\n")
            proc.stdin.flush()
        results = [_read(p) for p in workers]
        for bundle, res in zip(pair, results):
            if res["ok"]:
                continue
            if not res["typed"]:
                untyped.append(res)
            elif bundle == r3 or res["code"] not in ("rollback",):
                refused.append(res)  # r3 must always install; r2 may only be refused as a rollback
        try:
            with open_installed(store, "tiny", **open_args(keys, state)) as sess:
                if sess.info["release"] != 3:
                    unusable.setdefault(i, []).append(f"installed r{sess.info['release']}")
        except EdgemedError as exc:
            unusable.setdefault(i, []).append(f"open_installed: {exc.code}")
        rec = RollbackState(state).get("tiny")
        if rec is None or rec.release != 3:
            unusable.setdefault(i, []).append(f"recorded {rec}")
        leftovers = [p.name for p in store.rglob("*.tmp")]
        if leftovers:
            unusable.setdefault(i, []).append(f"temp files left {leftovers}")
    summary = (f"r3 + {other}: {len(unusable)} of {ROUNDS} rounds without a usable r3 "
               f"{dict(list(unusable.items())[:3])}; "
               f"{len(untyped)} untyped exceptions {untyped[:2]}; unexpected refusals "
               f"{refused[:2]}")
    print(summary)
    assert not unusable and not untyped and not refused, summary


def test_temp_cleanup_spares_live_processes(tmp_path: Path) -> None:
    from edgemed_runtime.util import remove_stale_temps, temp_prefix

    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    try:
        names = {"live": temp_prefix("a.edgemed", live.pid) + "x1.tmp",
                 "dead": temp_prefix("a.edgemed", dead.pid) + "x2.tmp",
                 "own": temp_prefix("a.edgemed") + "x3.tmp",
                 "no-pid": ".a.edgemed.x4.tmp", "not-temp": "a.edgemed"}
        for n in names.values():
            (tmp_path / n).write_bytes(b"")
        remove_stale_temps(tmp_path)
        left = {k for k, n in names.items() if (tmp_path / n).exists()}
        assert left == {"live", "no-pid", "not-temp"}
    finally:
        live.kill()
        live.wait()
