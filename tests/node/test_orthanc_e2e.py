"""End to end with a real Orthanc: Orthanc sends a series to the node (REST
``/modalities/node/store``), the node runs the installed bundle and C-STOREs an SR back into
Orthanc, the test reads it back with highdicom; plus the bad inputs that need a PACS."""

from __future__ import annotations

import urllib.request
from pathlib import Path
from typing import Iterator

import pytest

from edgemed_runtime.node import Node, load_config
from edgemed_runtime.node.audit import read_audit
from edgemed_runtime.outputs.sr import read_findings

from tests.node.kit import (SENTINEL, Model, Orthanc, free_port, node_toml, send_pynetdicom, series,
                       wait_for)


@pytest.fixture()
def node(tmp_path: Path, model: Model, orthanc: Orthanc, node_port: int) -> Iterator[Node]:
    orthanc.clear()
    n = Node(load_config(node_toml(tmp_path, model, port=node_port, dest_port=orthanc.dicom,
                                   selection='modality = ["CT"]')))
    n.start()
    yield n
    n.stop(drain=False)


def _srs(orthanc: Orthanc, n: int) -> list[str]:
    return wait_for(lambda: (lambda s: s if len(s) >= n else None)(orthanc.find_sr()), 60)


def test_orthanc_to_node_to_orthanc(node: Node, orthanc: Orthanc, tmp_path: Path) -> None:
    import highdicom as hd

    src = series(4, seed=1)
    orthanc.send_series(src)
    (oid,) = _srs(orthanc, 1)
    ds = orthanc.instance(oid)
    sr = hd.sr.ComprehensiveSR.from_dataset(ds)
    assert sr.SeriesInstanceUID != src[0].SeriesInstanceUID
    assert ds.StudyInstanceUID == src[0].StudyInstanceUID
    found = read_findings(ds)
    assert sorted(r for r, _, _ in found) == sorted(d.SOPInstanceUID for d in src)
    assert all(label in ("a", "b") and 0.5 <= p <= 1.0 for _, label, p in found)
    # the model's name, version and bundle id are in the document
    texts = {str(e.value) for e in ds.iterall() if e.keyword == "TextValue"}
    m = node.model.current
    assert {"tiny", m.version} <= texts  # algorithm name and version
    assert any(m.bundle_id in t for t in texts)  # the bundle id (tracking identifier)
    events = read_audit(tmp_path / "audit.jsonl")
    assert [e["event"] for e in events].count("delivered") == 1
    assert SENTINEL not in (tmp_path / "audit.jsonl").read_text()
    assert src[0].SeriesInstanceUID not in (tmp_path / "audit.jsonl").read_text()
    text = urllib.request.urlopen(f"http://127.0.0.1:{node.metrics_port}/metrics").read().decode()
    assert "edgemed_node_delivered_total 1" in text and "edgemed_node_received_total 4" in text
    assert 'edgemed_node_latency_seconds{quantile="0.5"}' in text


def test_series_failing_selection_is_skipped(node: Node, orthanc: Orthanc,
                                             tmp_path: Path) -> None:
    mr = series(2, seed=2, modality="MR")
    assert send_pynetdicom(mr, node.port) == [0, 0]
    ev = wait_for(lambda: [e for e in read_audit(tmp_path / "audit.jsonl")
                           if e["event"] == "skipped"], 30)
    assert "modality" in ev[0]["reason"]
    assert orthanc.find_sr() == []


def test_corrupt_instance_in_the_middle(node: Node, orthanc: Orthanc, tmp_path: Path) -> None:
    src = series(5, seed=3)
    src[2].PixelData = src[2].PixelData[:37]  # truncated pixel data: cannot be decoded
    assert send_pynetdicom(src, node.port) == [0] * 5
    (oid,) = _srs(orthanc, 1)
    refs = {r for r, _, _ in read_findings(orthanc.instance(oid))}
    assert refs == {d.SOPInstanceUID for i, d in enumerate(src) if i != 2}
    inferred = [e for e in read_audit(tmp_path / "audit.jsonl") if e["event"] == "inferred"]
    assert inferred[0]["analysed"] == 4 and inferred[0]["errors"] == 1


def test_two_senders_same_series_at_once(node: Node, orthanc: Orthanc) -> None:
    from concurrent.futures import ThreadPoolExecutor

    src = series(6, seed=4)
    with ThreadPoolExecutor(2) as ex:
        a = ex.submit(send_pynetdicom, src, node.port, calling="SENDER")
        b = ex.submit(send_pynetdicom, src[::-1], node.port, calling="SENDER2")
        assert a.result() == [0] * 6 and b.result() == [0] * 6
    (oid,) = _srs(orthanc, 1)
    refs = [r for r, _, _ in read_findings(orthanc.instance(oid))]
    assert sorted(refs) == sorted(d.SOPInstanceUID for d in src)  # each instance once
    assert node.metrics.counts["received"] == 6 and node.metrics.counts["duplicates"] == 6
    assert len(orthanc.find_sr()) == 1


def test_unknown_calling_ae_is_rejected(node: Node, tmp_path: Path) -> None:
    assert send_pynetdicom(series(1, seed=5), node.port, calling="INTRUDER") == [-1]
    assert any(e["event"] == "association-rejected" and e["calling_ae"] == "INTRUDER"
               for e in read_audit(tmp_path / "audit.jsonl"))
    assert node.metrics.counts["received"] == 0


def test_unsupported_sop_class_and_transfer_syntax(node: Node) -> None:
    from pynetdicom import AE

    rt_plan = "1.2.840.10008.5.1.4.1.1.481.5"
    big_endian = "1.2.840.10008.1.2.2"
    ae = AE(ae_title="SENDER")
    ae.add_requested_context(rt_plan, ["1.2.840.10008.1.2.1"])
    ae.add_requested_context("1.2.840.10008.5.1.4.1.1.2", [big_endian])
    ae.add_requested_context("1.2.840.10008.1.1")
    assoc = ae.associate("127.0.0.1", node.port, ae_title="EDGEMED")
    assert assoc.is_established  # the verification context is accepted ...
    try:
        accepted = {c.abstract_syntax for c in assoc.accepted_contexts}
        assert accepted == {"1.2.840.10008.1.1"}  # ... RT Plan and big endian CT are not
        assert {c.abstract_syntax for c in assoc.rejected_contexts} >= {rt_plan}
        assert assoc.send_c_echo().Status == 0
    finally:
        assoc.release()


def test_full_spool_answers_out_of_resources(tmp_path: Path, model: Model,
                                             orthanc: Orthanc) -> None:
    n = Node(load_config(node_toml(tmp_path, model, port=free_port(), dest_port=orthanc.dicom,
                                   max_bytes=1 << 16)))
    n.start()
    try:
        statuses = send_pynetdicom(series(60, seed=6), n.port)
    finally:
        n.stop(drain=False)
    assert statuses[0] == 0 and 0xA700 in statuses  # accepted until full, then refused
    first_refused = statuses.index(0xA700)
    assert all(s == 0 for s in statuses[:first_refused])
    assert n.metrics.counts["received"] == first_refused
    assert n.spool.used <= 1 << 16


def test_destination_down_then_dead_letter_then_redelivered(tmp_path: Path, model: Model,
                                                            orthanc: Orthanc) -> None:
    orthanc.clear()
    down = free_port()  # nothing listens there
    cfg = node_toml(tmp_path, model, port=free_port(), dest_port=down, retries=2, backoff=0.05)
    n = Node(load_config(cfg))
    n.start()
    try:
        assert send_pynetdicom(series(2, seed=7), n.port) == [0, 0]
        wait_for(lambda: n.metrics.counts["dead_letter"] == 1, 60)
    finally:
        n.stop(drain=False)
    events = read_audit(tmp_path / "audit.jsonl")
    dl = [e for e in events if e["event"] == "dead-letter"]
    assert dl[0]["attempts"] == 3  # 1 + 2 retries
    dead = list((tmp_path / "dead").glob("r-*.enc"))
    assert len(dead) == 1 and b"DICM" not in dead[0].read_bytes()  # kept, encrypted
    # the destination is back: the same result is delivered, once
    cfg.write_text(cfg.read_text().replace(f"port = {down}", f"port = {orthanc.dicom}"))
    n2 = Node(load_config(cfg))
    try:
        assert n2.redeliver_dead_letters() == (1, 0)
    finally:
        n2.stop(drain=False)  # never started: closes its files, sessions and associations
    assert len(orthanc.find_sr()) == 1 and not list((tmp_path / "dead").glob("r-*.enc"))
