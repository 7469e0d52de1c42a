"""A device process is SIGKILLed at each step of installing a new bundle; afterwards the
installed bundle still opens (the old one, or the new one once it was switched in), the
rollback state is consistent, and installing again succeeds."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import edgemed_runtime as rt
from edgemed_runtime.bundle import (
    RollbackState,
    install_bundle,
    installed_path,
    open_installed,
    verify_bundle,
)

from .conftest import Keys, open_args

CHILD = r"""
import json, os, signal, sys
import edgemed_runtime.bundle as b
from datetime import datetime, timezone
point, args = sys.argv[1], json.loads(sys.argv[2])
def die():
    os.kill(os.getpid(), signal.SIGKILL)
if point == "archive-half-written":
    real_fdopen = os.fdopen
    class Half:
        def __init__(self, f): self.f = f
        def __enter__(self): return self
        def __exit__(self, *a): return False
        def write(self, data):
            self.f.write(data[: len(data) // 2]); self.f.flush(); os.fsync(self.f.fileno()); die()
        def __getattr__(self, k): return getattr(self.f, k)
    def fdopen(fd, *a, **k):
        return Half(real_fdopen(fd, *a, **k))
    os.fdopen = fdopen
elif point.startswith("replace-"):
    n = int(point.split("-")[1]); calls = [0]; real = os.replace
    def replace(src, dst):
        calls[0] += 1
        if calls[0] == n:
            die()
        return real(src, dst)
    os.replace = replace
b.install_bundle(args["bundle"], args["store"], trust=args["trust"], device_key=args["device_key"],
                 state_dir=args["state"], now=datetime(2026, 6, 1, tzinfo=timezone.utc))
print("completed")
"""

# (kill point, release installed afterwards, release recorded afterwards)
POINTS = [
    ("archive-half-written", 1, 1),
    ("replace-1", 1, 1),  # archive fully written, killed before its rename
    ("replace-2", 1, 1),  # archive renamed, killed before current.json switches
    ("replace-3", 2, 1),  # switched, killed before the state records release 2
]


@pytest.mark.parametrize("point,installed,recorded", POINTS, ids=[p[0] for p in POINTS])
def test_kill_during_install(point: str, installed: int, recorded: int, keys: Keys,
                             pristine: dict[str, Path], tmp_path: Path) -> None:
    store, state = tmp_path / "store", tmp_path / "state"
    kw = open_args(keys, state)
    install_bundle(pristine["r1"], store, **kw)
    args = {"bundle": str(pristine["r2"]), "store": str(store), "state": str(state),
            "trust": str(keys.publisher.public_path), "device_key": str(keys.device.private_path)}
    out = subprocess.run([sys.executable, "-c", CHILD, point, json.dumps(args)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == -9, out.stdout + out.stderr  # SIGKILL
    assert "completed" not in out.stdout
    # the device still opens what is installed, and state is consistent with it
    assert RollbackState(state).get("tiny").release == recorded
    with open_installed(store, "tiny", **kw) as s:
        assert s.info["release"] == installed
    if installed == 1:
        with rt.open(pristine["r1"], **kw) as s:
            assert s.info["release"] == 1
    # no visible half-written bundle: every archive in the store verifies
    for p in (store / "tiny" / "bundles").glob("*.edgemed"):
        assert verify_bundle(p, trust=keys.publisher.public_path, now=kw["now"]).manifest.release in (1, 2)
    # installing again completes and cleans the leftovers
    p2 = install_bundle(pristine["r2"], store, **kw)
    assert installed_path(store, "tiny") == p2
    assert RollbackState(state).get("tiny").release == 2
    assert not [p for p in (store / "tiny").rglob(".*.tmp")]
