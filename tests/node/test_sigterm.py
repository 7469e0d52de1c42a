"""SIGTERM of ``edgemed-run serve`` (a real process): the queued series are delivered first
(drained), the process exits 0, and a restart finds nothing left to do."""

from __future__ import annotations

import signal
from pathlib import Path

from edgemed_runtime.node.audit import read_audit
from tests.node.kit import (NODE_AET, Model, free_port, node_toml, send_pynetdicom, series,
                            start_orthanc, stop_orthanc, wait_for)
from tests.node.test_kill9 import _start, _started


def test_sigterm_drains_then_exits(tmp_path: Path, model: Model) -> None:
    """SIGTERM right after the senders finished: the process exits 0 once the queued series are
    delivered (drained), and a restart has nothing left to do."""
    port = free_port()
    orthanc = start_orthanc(tmp_path / "orthanc", {"node": [NODE_AET, "127.0.0.1", port]})
    try:
        cfg = node_toml(tmp_path, model, port=port, dest_port=orthanc.dicom)
        audit = tmp_path / "audit.jsonl"
        proc = _start(cfg, tmp_path / "node.log")
        wait_for(lambda: _started(audit, 1), 60)
        for k in range(3):
            assert send_pynetdicom(series(3, seed=300 + k), port) == [0, 0, 0]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        assert len(orthanc.find_sr()) == 3
        stopped = [e for e in read_audit(audit) if e["event"] == "stopped"]
        assert stopped and stopped[0]["pending"] == 0
        proc = _start(cfg, tmp_path / "node.log")
        wait_for(lambda: _started(audit, 2), 60)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        rec = [e for e in read_audit(audit) if e["event"] == "recovered"][-1]
        assert (rec["open"], rec["queued"], rec["deliver"]) == (0, 0, 0)
        assert len(orthanc.find_sr()) == 3
    finally:
        stop_orthanc(orthanc)
