"""Late instances (arriving after their series was grouped). Default (``grouping.late =
"ack"``): acknowledged, audited, the series is not run again. ``late = "rerun"``: the
series' instances are kept for ``late_window_s``; a late instance re-opens the series and its
re-run is delivered as a new result version (new UIDs) covering every instance, also after a
restart; past the window it is acknowledged as late and the kept instances are purged."""

from __future__ import annotations

import time
from pathlib import Path

from edgemed_runtime.node import Node, load_config
from edgemed_runtime.node.audit import read_audit
from edgemed_runtime.outputs.sr import read_findings
from tests.node.kit import (Model, Orthanc, node_toml, send_pynetdicom, series, wait_for)


def _cfg(tmp: Path, model: Model, orthanc: Orthanc, port: int, grouping: str = "") -> Path:
    return node_toml(tmp, model, port=port, dest_port=orthanc.dicom, grouping=grouping)


def _srs(orthanc: Orthanc, n: int) -> list[str]:
    return wait_for(lambda: (lambda s: s if len(s) >= n else None)(orthanc.find_sr()), 60)


def _refs(orthanc: Orthanc) -> list[int]:
    return sorted(len(read_findings(orthanc.instance(o))) for o in orthanc.find_sr())


def test_late_instance_is_acknowledged_by_default(tmp_path: Path, model: Model,
                                                  orthanc: Orthanc, node_port: int) -> None:
    orthanc.clear()
    src = series(4, seed=110)
    n = Node(load_config(_cfg(tmp_path, model, orthanc, node_port))).start()
    try:
        assert send_pynetdicom(src[:3], n.port) == [0, 0, 0]
        _srs(orthanc, 1)
        wait_for(lambda: n.metrics.counts["delivered"] == 1, 30)
        assert send_pynetdicom(src[3:], n.port) == [0]
        time.sleep(2.0)  # longer than the grouping timeout: nothing is run again
    finally:
        n.stop(drain=False)
    assert _refs(orthanc) == [3] and n.metrics.counts["late"] == 1
    events = [e["event"] for e in read_audit(tmp_path / "audit.jsonl")]
    assert "late-instance" in events and "reopened" not in events


def test_rerun_gives_a_new_version_over_every_instance(tmp_path: Path, model: Model,
                                                       orthanc: Orthanc, node_port: int) -> None:
    orthanc.clear()
    src = series(5, seed=111)
    cfg = _cfg(tmp_path, model, orthanc, node_port, 'late = "rerun"')
    n = Node(load_config(cfg)).start()
    try:
        assert send_pynetdicom(src[:3], n.port) == [0, 0, 0]
        (first,) = _srs(orthanc, 1)
        wait_for(lambda: n.metrics.counts["delivered"] == 1, 30)
        assert send_pynetdicom(src[:1], n.port) == [0]  # a re-send: duplicate, no re-run
        assert send_pynetdicom(src[3:4], n.port) == [0]  # late: re-opens the series
        _srs(orthanc, 2)
        wait_for(lambda: n.metrics.counts["delivered"] == 2, 30)
    finally:
        n.stop(drain=False)
    assert _refs(orthanc) == [3, 4]
    v1 = orthanc.instance(first)
    v2 = orthanc.instance(next(o for o in orthanc.find_sr() if o != first))
    assert v2.SOPInstanceUID != v1.SOPInstanceUID and v2.SeriesInstanceUID != v1.SeriesInstanceUID
    ev = read_audit(tmp_path / "audit.jsonl")
    assert [e["version"] for e in ev if e["event"] == "reopened"] == [2]
    assert n.metrics.counts["duplicates"] == 1
    # after a restart (the journal compacted on start) the kept instances still re-run
    n2 = Node(load_config(cfg)).start()
    try:
        assert send_pynetdicom(src[4:], n2.port) == [0]
        _srs(orthanc, 3)
        wait_for(lambda: n2.metrics.counts["delivered"] == 1, 30)
    finally:
        n2.stop(drain=False)
    assert _refs(orthanc) == [3, 4, 5]


def test_past_the_window_late_is_acknowledged_and_purged(tmp_path: Path, model: Model,
                                                         orthanc: Orthanc,
                                                         node_port: int) -> None:
    orthanc.clear()
    src = series(3, seed=112)
    cfg = _cfg(tmp_path, model, orthanc, node_port, 'late = "rerun"\nlate_window_s = 1')
    n = Node(load_config(cfg)).start()
    try:
        assert send_pynetdicom(src[:2], n.port) == [0, 0]
        _srs(orthanc, 1)
        wait_for(lambda: any(e["e"] == "purged" for e in n.spool.records()), 30)
        assert not list((tmp_path / "spool" / "blobs").glob("i-*.enc"))
        assert send_pynetdicom(src[2:], n.port) == [0]
        time.sleep(2.0)
    finally:
        n.stop(drain=False)
    assert _refs(orthanc) == [2] and n.metrics.counts["late"] == 1
