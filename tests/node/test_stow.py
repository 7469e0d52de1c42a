"""Results by DICOMweb STOW-RS into a real Orthanc (its DICOMweb plugin, Debian's
orthanc-dicomweb): instead of C-STORE, and both together (the same SR instance, stored once);
a STOW-RS destination that is down: retries, then the dead-letter folder, then redelivered."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from edgemed_runtime.node import Node, load_config
from edgemed_runtime.node.audit import read_audit
from edgemed_runtime.node.stow import multipart
from edgemed_runtime.outputs.sr import read_findings
from tests.node.kit import (NODE_AET, Model, Orthanc, free_port, node_toml, send_pynetdicom,
                            series, start_orthanc, stop_orthanc, wait_for)


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Orthanc]:
    o = start_orthanc(tmp_path_factory.mktemp("orthanc-web"),
                      {"node": [NODE_AET, "127.0.0.1", free_port()]}, dicomweb=True)
    yield o
    stop_orthanc(o)


def _node(tmp: Path, model: Model, web: Orthanc, send_by: str, url: str | None = None,
          retries: int = 1) -> Node:
    url = url or web.url("/dicom-web/studies")
    n = Node(load_config(node_toml(tmp, model, port=free_port(), dest_port=web.dicom,
                                   retries=retries, dest_extra=f'send_by = {send_by}\n'
                                   f'stow_url = "{url}"')))
    return n.start()


def _srs(web: Orthanc, n: int) -> list[str]:
    return wait_for(lambda: (lambda s: s if len(s) >= n else None)(web.find_sr()), 60)


@pytest.mark.parametrize("send_by", ['["stow-rs"]', '["c-store", "stow-rs"]'])
def test_stow_rs_delivers_the_sr_once(tmp_path: Path, model: Model, web: Orthanc,
                                      send_by: str) -> None:
    web.clear()
    n = _node(tmp_path, model, web, send_by)
    try:
        src = series(3, seed=60)
        assert send_pynetdicom(src, n.port) == [0, 0, 0]
        (oid,) = _srs(web, 1)
        wait_for(lambda: n.metrics.counts["delivered"] == 1, 30)
    finally:
        n.stop(drain=False)
    ds = web.instance(oid)
    assert sorted(r for r, _, _ in read_findings(ds)) == sorted(d.SOPInstanceUID for d in src)
    assert len(web.find_sr()) == 1  # both ways: the same SOP Instance UID, stored once
    (ev,) = [e for e in read_audit(tmp_path / "audit.jsonl") if e["event"] == "delivered"]
    assert ev["attempts"] == 1


def test_stow_rs_down_retries_then_dead_letter_then_redelivered(tmp_path: Path, model: Model,
                                                                web: Orthanc) -> None:
    web.clear()
    down = f"http://127.0.0.1:{free_port()}/dicom-web/studies"
    n = _node(tmp_path, model, web, '["stow-rs"]', url=down, retries=2)
    try:
        assert send_pynetdicom(series(2, seed=61), n.port) == [0, 0]
        wait_for(lambda: n.metrics.counts["dead_letter"] == 1, 30)
    finally:
        n.stop(drain=False)
    (ev,) = [e for e in read_audit(tmp_path / "audit.jsonl") if e["event"] == "dead-letter"]
    assert ev["attempts"] == 3 and ev["reason"].startswith("STOW-RS unreachable")
    assert len(list((tmp_path / "dead").glob("r-*.enc"))) == 1
    assert web.find_sr() == []
    # the destination is back (the same node.toml, the right URL): redelivered, once
    cfg = tmp_path / "node.toml"
    cfg.write_text(cfg.read_text().replace(down, web.url("/dicom-web/studies")))
    n2 = Node(load_config(cfg))
    try:
        assert n2.redeliver_dead_letters() == (1, 0)
    finally:
        n2.stop(drain=False)
    assert len(web.find_sr()) == 1 and not list((tmp_path / "dead").glob("r-*.enc"))


def test_a_refused_instance_is_a_failure(web: Orthanc) -> None:
    from edgemed_runtime.node.stow import stow

    assert stow(web.url("/dicom-web/studies"), b"not dicom", timeout_s=10).startswith("STOW-RS")
    body, ctype = multipart(b"DICM")
    assert ctype.startswith('multipart/related; type="application/dicom"; boundary=')
    assert body.endswith(b"--\r\n")
