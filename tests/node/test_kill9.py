"""The fault bar: ``kill -9`` of the node (``edgemed-run serve``, a real process) in the middle
of 10 series sent by Orthanc; after a restart (and Orthanc re-sending what it could not send,
as a PACS's routing retries would) there are 10 results in Orthanc, each exactly once. Then
the spool is scanned for the PatientName sentinel and for raw pixel rows of the sent images."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
from pathlib import Path

import pytest

from edgemed_runtime.node.audit import read_audit
from edgemed_runtime.outputs.sr import read_findings
from tests.node.kit import (NODE_AET, SENTINEL, Model, free_port, node_toml, series,
                            start_orthanc, stop_orthanc, wait_for)

REPO = Path(__file__).resolve().parents[2]


def _start(cfg: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "ORT_DISABLE_TELEMETRY": "1", "CI": "true",
           "PYTHONPATH": str(REPO / "runtimes")}
    out = open(log, "ab")  # noqa: SIM115 - the child holds it
    return subprocess.Popen([sys.executable, "-m", "edgemed_runtime", "serve", str(cfg)],
                            stdout=out, stderr=out, env=env)


def _started(audit: Path, n: int) -> bool:
    try:
        return sum(e["event"] == "started" for e in read_audit(audit)) >= n
    except (FileNotFoundError, ValueError):
        return False


def test_kill9_mid_stream_then_restart_gives_each_result_once(tmp_path: Path,
                                                              model: Model) -> None:
    port = free_port()
    orthanc = start_orthanc(tmp_path / "orthanc", {"node": [NODE_AET, "127.0.0.1", port]})
    try:
        cfg = node_toml(tmp_path, model, port=port, dest_port=orthanc.dicom, timeout=1.5,
                        retries=3, backoff=0.2)
        audit = tmp_path / "audit.jsonl"
        proc = _start(cfg, tmp_path / "node.log")
        wait_for(lambda: _started(audit, 1), 60)
        all_series = [series(4, seed=100 + k) for k in range(10)]
        ids = [orthanc.upload(s) for s in all_series]
        sent: dict[int, bool] = {}

        def send_all() -> None:
            for k, oids in enumerate(ids):
                try:
                    orthanc.post("/modalities/node/store", {"Resources": oids,
                                                             "Synchronous": True}, timeout=60)
                    sent[k] = True
                except (urllib.error.URLError, OSError):
                    sent[k] = False  # the node was down: Orthanc's job failed

        t = threading.Thread(target=send_all)
        t.start()
        wait_for(lambda: len(sent) >= 4, 120, 0.02)  # in the middle of the stream
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        t.join()
        failed = [k for k, ok in sent.items() if not ok]
        assert failed  # the kill interrupted the stream
        proc = _start(cfg, tmp_path / "node.log")
        wait_for(lambda: _started(audit, 2), 60)
        for k in failed:  # what the PACS could not deliver, it sends again
            orthanc.post("/modalities/node/store", {"Resources": ids[k], "Synchronous": True})
        srs = wait_for(lambda: (lambda s: s if len(s) >= 10 else None)(orthanc.find_sr()), 120)
        time.sleep(3)  # anything doubled would arrive by now
        srs = orthanc.find_sr()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        refs = [sorted(r for r, _, _ in read_findings(orthanc.instance(o))) for o in srs]
        expected = [sorted(d.SOPInstanceUID for d in s) for s in all_series]
        assert len(srs) == 10 and sorted(refs) == sorted(expected)  # 10/10, each once
        delivered = [e for e in read_audit(audit) if e["event"] == "delivered"]
        assert len({e["series"] for e in delivered}) == 10
        _scan_spool(tmp_path, all_series)
    finally:
        stop_orthanc(orthanc)


def _scan_spool(tmp: Path, all_series: list) -> None:
    """No PatientName sentinel and no raw pixel row of any sent image in any spool file (nor
    in the audit log, the dead-letter folder or the scratch folder)."""
    rows = {bytes(ds.PixelData[r * 32:(r + 1) * 32]) for s in all_series for ds in s
            for r in range(0, 16, 5)}
    files = [p for d in ("spool", "dead", "scratch") if (tmp / d).exists()
             for p in (tmp / d).rglob("*") if p.is_file()] + [tmp / "audit.jsonl"]
    assert any(p.name.endswith(".enc") for p in files) or any(
        p.name == "journal.jsonl" for p in files)
    hits = []
    for p in files:
        data = p.read_bytes()
        if SENTINEL.encode() in data or any(r in data for r in rows):
            hits.append(p.name)
    assert hits == []


@pytest.mark.parametrize("n", [1])
def test_sentinel_scan_sees_plaintext(tmp_path: Path, n: int) -> None:
    """The scan above can fail: a plaintext DICOM file in the spool is a hit."""
    from tests.node.kit import to_bytes

    s = series(n, seed=999)
    (tmp_path / "spool").mkdir()
    (tmp_path / "spool" / "leak.dcm").write_bytes(to_bytes(s[0]))
    (tmp_path / "audit.jsonl").write_text("")
    with pytest.raises(AssertionError):
        _scan_spool(tmp_path, [s])

