"""Results by C-STORE over DICOM TLS into a real Orthanc (DicomTlsEnabled, certificates made
by the test with ``cryptography``): delivered with the right CA and client certificate; a node
that does not trust Orthanc's certificate, or speaks plain TCP, never delivers (dead letter)."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from edgemed_runtime.errors import InvalidInputError
from edgemed_runtime.node import Node, load_config
from edgemed_runtime.node.audit import read_audit
from tests.node.kit import (NODE_AET, Model, Orthanc, free_port, node_toml, send_pynetdicom,
                            series, start_orthanc, stop_orthanc, wait_for)
from tests.node.test_tls import _cert


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("pki-out")
    ca = _cert(d, "ca", None, ca=True)
    other = _cert(d, "other-ca", None, ca=True)
    _cert(d, "server", ca, ca=False)  # Orthanc's
    _cert(d, "client", ca, ca=False)  # the node's
    _cert(d, "intruder", other, ca=False)
    return d


@pytest.fixture(scope="module")
def tls_orthanc(tmp_path_factory: pytest.TempPathFactory, pki: Path) -> Iterator[Orthanc]:
    o = start_orthanc(tmp_path_factory.mktemp("orthanc-tls"),
                      {"node": [NODE_AET, "127.0.0.1", free_port()]},
                      extra={"DicomTlsEnabled": True,
                             "DicomTlsCertificate": str(pki / "server.pem"),
                             "DicomTlsPrivateKey": str(pki / "server.key"),
                             "DicomTlsTrustedCertificates": str(pki / "ca.pem"),
                             "DicomTlsRemoteCertificateRequired": True})
    yield o
    stop_orthanc(o)


def _run(tmp: Path, model: Model, o: Orthanc, tls: str) -> Node:
    n = Node(load_config(node_toml(tmp, model, port=free_port(), dest_port=o.dicom, retries=1,
                                   dest_extra=tls)))
    n.start()
    try:
        assert send_pynetdicom(series(2, seed=70), n.port) == [0, 0]
        wait_for(lambda: n.metrics.counts["delivered"] + n.metrics.counts["dead_letter"], 60)
    finally:
        n.stop(drain=False)
    return n


def test_c_store_over_tls_with_the_ca_and_a_client_certificate(tmp_path: Path, model: Model,
                                                               tls_orthanc: Orthanc,
                                                               pki: Path) -> None:
    tls_orthanc.clear()
    n = _run(tmp_path, model, tls_orthanc, f'[destination.tls]\nca = "{pki}/ca.pem"\n'
             f'cert = "{pki}/client.pem"\nkey = "{pki}/client.key"')
    assert n.metrics.counts["delivered"] == 1
    assert len(tls_orthanc.find_sr()) == 1


@pytest.mark.parametrize("tls", ["other-ca", "intruder", "plain"])
def test_untrusted_or_plain_destination_is_never_delivered(tmp_path: Path, model: Model,
                                                           tls_orthanc: Orthanc, pki: Path,
                                                           tls: str) -> None:
    tls_orthanc.clear()
    table = {"other-ca": f'[destination.tls]\nca = "{pki}/other-ca.pem"\n'
                         f'cert = "{pki}/client.pem"\nkey = "{pki}/client.key"',
             "intruder": f'[destination.tls]\nca = "{pki}/ca.pem"\n'
                         f'cert = "{pki}/intruder.pem"\nkey = "{pki}/intruder.key"',
             "plain": ""}[tls]
    n = _run(tmp_path, model, tls_orthanc, table)
    assert n.metrics.counts["dead_letter"] == 1 and tls_orthanc.find_sr() == []
    assert any(e["event"] == "dead-letter" for e in read_audit(tmp_path / "audit.jsonl"))


def test_unreadable_destination_tls_files_are_a_typed_error(tmp_path: Path, model: Model,
                                                            pki: Path) -> None:
    cfg = node_toml(tmp_path, model, port=free_port(), dest_port=free_port(),
                    dest_extra=f'[destination.tls]\nca = "{pki}/missing.pem"')
    with pytest.raises(InvalidInputError) as e:
        Node(load_config(cfg))
    assert e.value.code == "bad-tls"
