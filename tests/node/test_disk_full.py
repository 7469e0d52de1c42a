"""A disk that fills up: the spool on a 512 KiB tmpfs. C-STOREs are accepted while instances
fit, then answered 0xA700 (Out of Resources) instead of accepted and lost; what was accepted is
processed, and the journal still replays."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Iterator

import pytest

from edgemed_runtime.node import Node, load_config
from edgemed_runtime.node.audit import read_audit
from tests.node.kit import Model, ct_slice, free_port, node_toml, send_pynetdicom, wait_for


@pytest.fixture()
def small_disk(tmp_path: Path) -> Iterator[Path]:
    d = tmp_path / "spool"
    d.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(d)],
                       capture_output=True)
    if r.returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root): the budget test covers 0xA700")
    try:
        yield d
    finally:
        subprocess.run(["umount", str(d)], check=False)


def test_full_disk_answers_out_of_resources(tmp_path: Path, model: Model,
                                            small_disk: Path) -> None:
    cfg = node_toml(tmp_path, model, port=free_port(), dest_port=free_port(), retries=0,
                    max_bytes=1 << 30)  # the budget is far away: the disk fills first
    n = Node(load_config(cfg))
    n.start()
    try:
        st, se = "1.2.826.0.1.3680043.8.498.1", "1.2.826.0.1.3680043.8.498.2"
        slices = [ct_slice(st, se, i, seed=i, size=64) for i in range(80)]  # ~8 KiB each
        statuses = send_pynetdicom(slices, n.port)
        assert statuses[0] == 0 and 0xA700 in statuses
        assert set(statuses) == {0, 0xA700}  # never another failure, never a crash
        accepted = statuses.count(0)
        assert n.metrics.counts["received"] == accepted
        wait_for(lambda: n.metrics.counts["dead_letter"] == 1, 60)  # the accepted part ran
    finally:
        n.stop(drain=False)
    events = read_audit(tmp_path / "audit.jsonl")
    assert any(e["event"] == "store-refused" and e["code"] == "spool-full" for e in events)
    inferred = [e for e in events if e["event"] == "inferred"]
    assert inferred[0]["analysed"] == accepted
    n2 = Node(load_config(cfg))  # the journal replays after the full disk
    try:
        states = n2.spool.replay()
        assert len(states) == 1 and next(iter(states.values())).done == "dead-letter"
    finally:
        n2.stop(drain=False)
