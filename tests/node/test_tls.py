"""TLS with client certificates: a client with a certificate from the configured CA is served;
one with a certificate from another CA, or none, cannot associate."""

from __future__ import annotations

import datetime as dt
import ssl
from pathlib import Path
from typing import Iterator

import pytest

from edgemed_runtime.errors import InvalidInputError
from edgemed_runtime.node import Node, load_config
from tests.node.kit import Model, free_port, node_toml, send_pynetdicom, series


def _cert(folder: Path, name: str, issuer: tuple | None, *, ca: bool) -> tuple:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    ikey, iname = (issuer[0], issuer[1].subject) if issuer else (key, subject)
    now = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    b = (x509.CertificateBuilder().subject_name(subject).issuer_name(iname)
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now).not_valid_after(now + dt.timedelta(days=3650))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if not ca:
        b = b.add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                         x509.IPAddress(
                                                             __import__("ipaddress")
                                                             .ip_address("127.0.0.1"))]),
                            critical=False)
    cert = b.sign(ikey, hashes.SHA256())
    (folder / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / f"{name}.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    return key, cert


@pytest.fixture()
def pki(tmp_path: Path) -> Path:
    d = tmp_path / "pki"
    d.mkdir()
    ca = _cert(d, "ca", None, ca=True)
    other = _cert(d, "other-ca", None, ca=True)
    _cert(d, "server", ca, ca=False)
    _cert(d, "client", ca, ca=False)
    _cert(d, "intruder", other, ca=False)
    return d


@pytest.fixture()
def tls_node(tmp_path: Path, model: Model, pki: Path) -> Iterator[Node]:
    tls = (f'[node.tls]\ncert = "{pki}/server.pem"\nkey = "{pki}/server.key"\n'
           f'ca = "{pki}/ca.pem"')
    n = Node(load_config(node_toml(tmp_path, model, port=free_port(), dest_port=free_port(),
                                   node_extra=tls, retries=0)))
    n.start()
    yield n
    n.stop(drain=False)


def _client(pki: Path, name: str | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(pki / "ca.pem"))
    if name is not None:
        ctx.load_cert_chain(str(pki / f"{name}.pem"), str(pki / f"{name}.key"))
    return ctx


def test_client_certificate_from_the_ca_is_served(tls_node: Node, pki: Path) -> None:
    assert send_pynetdicom(series(2, seed=40), tls_node.port,
                           ssl_context=_client(pki, "client")) == [0, 0]


@pytest.mark.parametrize("name", ["intruder", None])
def test_wrong_or_missing_client_certificate_is_refused(tls_node: Node, pki: Path,
                                                        name: str | None) -> None:
    assert send_pynetdicom(series(1, seed=41), tls_node.port,
                           ssl_context=_client(pki, name)) == [-1]
    assert tls_node.metrics.counts["received"] == 0


def test_plain_tcp_to_a_tls_node_is_refused(tls_node: Node) -> None:
    assert send_pynetdicom(series(1, seed=42), tls_node.port) == [-1]


def test_bad_tls_files_are_a_typed_error(tmp_path: Path, model: Model, pki: Path) -> None:
    tls = f'[node.tls]\ncert = "{pki}/ca.key"\nkey = "{pki}/ca.key"\nca = "{pki}/ca.pem"'
    n = Node(load_config(node_toml(tmp_path, model, port=free_port(), dest_port=free_port(),
                                   node_extra=tls)))
    with pytest.raises(InvalidInputError) as e:
        n.start()
    assert e.value.code == "bad-tls"
    n.stop(drain=False)
