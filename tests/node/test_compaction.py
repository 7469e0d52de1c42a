"""Journal compaction: on start (and when the journal passes ``spool.journal_max_bytes``) the
journal is rewritten as the shortest one that replays to the same states, crash-safe; a
``kill -9`` at any moment of a compaction loses nothing."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from edgemed_runtime.node.spool import COMPACT_TMP, JOURNAL, Spool, load_or_create_key

REPO = Path(__file__).resolve().parents[2]


def _view(spool: Spool) -> dict[str, Any]:
    """What a restart acts on: per series its final state, or its open work."""
    out: dict[str, Any] = {}
    for sid, s in spool.replay().items():
        if s.done is not None:
            out[sid] = (s.done, sorted(s.delivered))
        else:
            out[sid] = ("open", s.grouped, sorted(s.instances.items()),
                        sorted((b, f) for b, f in s.results.items() if b not in s.delivered))
    return out


def _journal(root: Path, n_done: int, per: int) -> None:
    """A long journal: ``n_done`` delivered series of ``per`` instances (no blobs left), then
    open, grouped, inferred and dead-letter series written through the Spool with blobs."""
    root.mkdir(parents=True)
    with open(root / JOURNAL, "w") as f:
        for k in range(n_done):
            sid = f"{k:024x}"
            for i in range(per):
                f.write(json.dumps({"e": "received", "s": sid, "i": f"{i:024x}",
                                    "f": f"i-{sid}-{i:024x}"}) + "\n")
            f.write(json.dumps({"e": "grouped", "s": sid, "n": per}) + "\n")
            f.write(json.dumps({"e": "inferred", "s": sid, "b": "b1", "f": f"r-{sid}-b1"}) + "\n")
            f.write(json.dumps({"e": "delivered", "s": sid, "b": "b1"}) + "\n")


def _fill_live(spool: Spool) -> None:
    for k, stage in enumerate(("open", "grouped", "inferred", "dead")):
        sid = f"{0xF00 + k:024x}"
        for i in range(3):
            spool.put(f"i-{sid}-{i:024x}", os.urandom(64))
            spool.log("received", s=sid, i=f"{i:024x}", f=f"i-{sid}-{i:024x}")
        if stage != "open":
            spool.log("grouped", s=sid, n=3)
        if stage in ("inferred", "dead"):
            spool.put(f"r-{sid}-b1", os.urandom(64))
            spool.log("inferred", s=sid, b="b1", f=f"r-{sid}-b1")
        if stage == "dead":
            spool.log("dead-letter", s=sid, b="b1", f=f"r-{sid}-b1")


def test_compaction_on_start_keeps_every_state_and_shrinks(tmp_path: Path) -> None:
    root, key = tmp_path / "spool", load_or_create_key(tmp_path / "k")
    _journal(root, 200, 10)
    before = (root / JOURNAL).stat().st_size
    s = Spool(root, key, 1 << 30)
    want = _view(s)
    _fill_live(s)
    want = _view(s)
    s.close()
    s2 = Spool(root, key, 1 << 30)  # compacts again on start
    assert _view(s2) == want and len(want) == 204
    after = (root / JOURNAL).stat().st_size
    assert after < before / 5
    assert not (root / COMPACT_TMP).exists()
    # the live series' blobs are kept and still decrypt; no stray lines
    assert len(s2.get(f"i-{0xF00:024x}-{0:024x}")) == 64
    s2.close()


def test_a_journal_over_its_bound_is_compacted_while_running(tmp_path: Path) -> None:
    root, key = tmp_path / "spool", load_or_create_key(tmp_path / "k")
    s = Spool(root, key, 1 << 30, journal_max_bytes=8192)
    for k in range(120):
        sid = f"{k:024x}"
        for i in range(4):
            s.log("received", s=sid, i=f"{i:024x}", f=f"i-{sid}-{i:024x}")
        s.log("grouped", s=sid, n=4)
        if k % 3:
            s.log("delivered", s=sid, b="b1")
        live = 600 * sum(1 for v in _view(s).values() if v[0] == "open")
        assert (root / JOURNAL).stat().st_size <= max(8192, 2 * live) + 200
    assert s.compactions > 1
    view = _view(s)
    assert sum(v[0] == "delivered" for v in view.values()) == 80
    assert sum(v[0] == "open" and v[1] and len(v[2]) == 4 for v in view.values()) == 40
    s.close()
    assert _view(Spool(root, key, 1 << 30)) == view


CHILD = """
import sys
from pathlib import Path
from edgemed_runtime.node.spool import Spool
key = Path(sys.argv[2]).read_bytes()
print("ready", flush=True)
Spool(Path(sys.argv[1]), key, 1 << 30).close()
print("done", flush=True)
"""


def test_kill9_during_compaction_loses_nothing(tmp_path: Path) -> None:
    master, keyf = tmp_path / "master", tmp_path / "k"
    key = load_or_create_key(keyf)
    _journal(master, 600, 10)  # ~ 8000 lines
    s = Spool(master, key, 1 << 30, journal_max_bytes=1 << 40)
    _fill_live(s)
    s.close()
    # that start compacted the master: make it long again
    with open(master / JOURNAL, "a") as f:
        for k in range(600, 1200):
            sid = f"{k:024x}"
            for i in range(10):
                f.write(json.dumps({"e": "received", "s": sid, "i": f"{i:024x}",
                                    "f": f"i-{sid}-{i:024x}"}) + "\n")
            f.write(json.dumps({"e": "skipped", "s": sid, "why": "modality"}) + "\n")
    env = {**os.environ, "PYTHONPATH": str(REPO / "runtimes")}

    def run(k: int, delay: float | None) -> tuple[Path, bool, float]:
        work = tmp_path / f"w{k}"
        shutil.copytree(master, work)
        p = subprocess.Popen([sys.executable, "-c", CHILD, str(work), str(keyf)],
                             stdout=subprocess.PIPE, env=env)
        assert p.stdout is not None and p.stdout.readline().strip() == b"ready"
        t0 = time.monotonic()
        if delay is not None:
            time.sleep(delay)
            p.send_signal(signal.SIGKILL)
        finished = p.stdout.readline().strip() == b"done"
        p.wait()
        return work, finished, time.monotonic() - t0

    ref, _, took = run(0, None)  # an uninterrupted compaction: the reference and its duration
    want = _view(Spool(ref, key, 1 << 30))
    assert len(want) == 1204
    mid = 0
    for k in range(1, 9):
        work, finished, _ = run(k, took * k / 9)
        mid += not finished  # killed inside Spool(): during the compaction
        assert _view(Spool(work, key, 1 << 30)) == want  # nothing lost, nothing invented
        assert not (work / COMPACT_TMP).exists()
        shutil.rmtree(work)
    assert mid >= 1, "no kill landed during a compaction"
