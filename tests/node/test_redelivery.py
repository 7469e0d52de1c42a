"""Automatic redelivery of dead letters (``destination.redeliver_s``): the destination is down,
the result goes to the dead-letter folder; the node keeps trying with a growing wait and, once a
real Orthanc listens there, the SR arrives, exactly once, without ``--redeliver``."""

from __future__ import annotations

from pathlib import Path

from edgemed_runtime.node import Node, load_config
from edgemed_runtime.node.audit import read_audit
from tests.node.kit import (NODE_AET, Model, free_port, node_toml, send_pynetdicom, series,
                            start_orthanc, stop_orthanc, wait_for)


def test_dead_letters_are_redelivered_automatically(tmp_path: Path, model: Model) -> None:
    dest = free_port()  # nobody listens there yet
    n = Node(load_config(node_toml(tmp_path, model, port=free_port(), dest_port=dest,
                                   retries=0, dest_extra="redeliver_s = 0.5")))
    n.start()
    orthanc = None
    try:
        assert send_pynetdicom(series(2, seed=80), n.port) == [0, 0]
        wait_for(lambda: n.metrics.counts["dead_letter"] == 1, 30)
        audit = tmp_path / "audit.jsonl"
        # still down: the redelivery fails and waits longer each time
        wait_for(lambda: sum(e["event"] == "redelivery" for e in read_audit(audit)) >= 2, 30)
        assert len(list((tmp_path / "dead").glob("r-*.enc"))) == 1
        orthanc = start_orthanc(tmp_path / "orthanc", {"node": [NODE_AET, "127.0.0.1", 1]},
                                extra={"DicomPort": dest})
        wait_for(lambda: len(orthanc.find_sr()) == 1, 60)
        wait_for(lambda: n.metrics.counts["delivered"] == 1, 30)
    finally:
        n.stop(drain=False)
        if orthanc is not None:
            stop_orthanc(orthanc)
    events = read_audit(tmp_path / "audit.jsonl")
    assert [e.get("redelivered") for e in events if e["event"] == "delivered"] == [True]
    assert not list((tmp_path / "dead").glob("r-*.enc"))
    tries = [e for e in events if e["event"] == "redelivery"]
    assert tries[-1]["delivered"] == 1 and all(e["failing"] == 1 for e in tries[:-1])
