"""Operations: hot swap to a newly installed bundle between series (a refused one leaves the
old one serving), the watchdog that replaces a stalled worker, a drained stop."""

from __future__ import annotations

import json
import shutil
import socket
import threading
from pathlib import Path

from edgemed_runtime.bundle.install import install_bundle
from edgemed_runtime.node import Node, load_config
from edgemed_runtime.node.audit import read_audit
from edgemed_runtime.outputs.sr import read_findings
from tests.node.kit import (Model, Orthanc, free_port, node_toml, send_pynetdicom, series,
                            wait_for)


def _own_store(tmp_path: Path, model: Model) -> Model:
    """A copy of the installed store and state, so this test's installs stay its own."""
    store, state = tmp_path / "store", tmp_path / "state"
    shutil.copytree(model.store, store)
    shutil.copytree(model.state, state)
    return Model(model.trust, model.device_key, store, state, model.seal, None, model.device_pub)


def _bundle_ids(orthanc: Orthanc) -> list[str]:
    out = []
    for oid in orthanc.find_sr():
        ds = orthanc.instance(oid)
        texts = [str(e.value) for e in ds.iterall() if e.keyword == "TextValue"]
        out += sorted({t.split()[1] for t in texts if t.startswith("bundle ")})
    return out


def test_hot_swap_between_series_and_refused_bundle(tmp_path: Path, model: Model,
                                                    orthanc: Orthanc) -> None:
    orthanc.clear()
    m = _own_store(tmp_path, model)
    n = Node(load_config(node_toml(tmp_path, m, port=free_port(), dest_port=orthanc.dicom)))
    n.start()
    try:
        first = n.model.current.bundle_id
        assert send_pynetdicom(series(2, seed=20), n.port) == [0, 0]
        wait_for(lambda: len(orthanc.find_sr()) == 1)
        install_bundle(m.seal(2, seed=1), m.store, trust=m.trust, device_key=m.device_key,
                       state_dir=m.state)
        assert send_pynetdicom(series(2, seed=21), n.port) == [0, 0]
        wait_for(lambda: len(orthanc.find_sr()) == 2)
        second = n.model.current.bundle_id
        assert second != first and sorted(_bundle_ids(orthanc)) == sorted([first, second])
        # a bundle the device refuses (its bytes tampered) is "installed" behind its back
        cur = m.store / "tiny" / "current.json"
        d = json.loads(cur.read_text())
        bad = m.store / "tiny" / "bundles" / "00000000000000000003-tampered.edgemed"
        data = bytearray((m.store / "tiny" / d["bundle"]).read_bytes())
        data[len(data) // 2] ^= 0xFF
        bad.write_bytes(bytes(data))
        cur.write_text(json.dumps({**d, "bundle": f"bundles/{bad.name}", "release": 3}))
        assert send_pynetdicom(series(2, seed=22), n.port) == [0, 0]
        wait_for(lambda: len(orthanc.find_sr()) == 3)
        assert n.model.current.bundle_id == second  # the old one still serves
        events = read_audit(tmp_path / "audit.jsonl")
        assert [e["event"] for e in events].count("swapped") == 1
        refused = [e for e in events if e["event"] == "swap-refused"]
        assert len(refused) == 1 and refused[0]["serving"] == second
    finally:
        n.stop(drain=False)


def test_watchdog_replaces_a_stalled_worker(tmp_path: Path, model: Model) -> None:
    """The destination accepts TCP and never answers: each delivery stalls its worker; the
    watchdog replaces the worker twice, then gives the result to the dead-letter folder."""
    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(8)
    conns: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        hole.settimeout(0.2)
        while not stop.is_set():
            try:
                conns.append(hole.accept()[0])
            except OSError:
                continue

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    cfg = node_toml(tmp_path, model, port=free_port(), dest_port=hole.getsockname()[1],
                    retries=0, workers="watchdog_s = 0.5")
    n = Node(load_config(cfg))
    n.start()
    try:
        assert send_pynetdicom(series(2, seed=30), n.port) == [0, 0]
        wait_for(lambda: n.metrics.counts["dead_letter"] == 1, 60)
        assert n.metrics.counts["watchdog_restarts"] == 2
        assert sum(1 for b in n._busy) == 2  # the pool is back to its size
        events = read_audit(tmp_path / "audit.jsonl")
        assert [e["times"] for e in events if e["event"] == "watchdog-restart"] == [1, 2]
        assert any(e["event"] == "dead-letter" and e["reason"] == "watchdog" for e in events)
        assert len(list((tmp_path / "dead").glob("r-*.enc"))) == 1
    finally:
        n.stop(drain=False)
        stop.set()
        t.join()
        for c in conns:
            c.close()
        hole.close()


def test_stop_drains_the_queue(tmp_path: Path, model: Model, orthanc: Orthanc) -> None:
    orthanc.clear()
    n = Node(load_config(node_toml(tmp_path, model, port=free_port(), dest_port=orthanc.dicom)))
    n.start()
    for k in range(3):
        assert send_pynetdicom(series(3, seed=50 + k), n.port) == [0, 0, 0]
    n.stop(drain=True)  # returns once the three series are delivered
    assert n.metrics.counts["delivered"] == 3 and len(orthanc.find_sr()) == 3
    srs = [read_findings(orthanc.instance(o)) for o in orthanc.find_sr()]
    assert sorted(len(s) for s in srs) == [3, 3, 3]
