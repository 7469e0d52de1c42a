"""Helpers and fixtures of the node tests (conftest.py registers the fixtures): keys, a tiny sealed bundle installed in a store, synthetic CT
series (fixed seeds), a real Orthanc (Debian package) on 127.0.0.1 with a generated config, and
helpers to start the node and to talk to Orthanc's REST API."""

from __future__ import annotations

import io
import json
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest

pytest.importorskip("pynetdicom")
pytest.importorskip("highdicom")

from pydicom.dataset import Dataset, FileMetaDataset  # noqa: E402
from pydicom.uid import ExplicitVRLittleEndian, generate_uid  # noqa: E402

CT = "1.2.840.10008.5.1.4.1.1.2"
SENTINEL = "SENTINEL^EDGEMEDPHI"
EXPIRES = datetime(2030, 1, 1, tzinfo=timezone.utc)
CREATED = datetime(2026, 1, 1, tzinfo=timezone.utc)
NODE_AET = "EDGEMED"
ORTHANC_AET = "ORTHANC"


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- images --------------------------------------------------------------------------------
def ct_slice(study: str, series: str, index: int, *, seed: int, size: int = 16,
             modality: str = "CT", patient: str = SENTINEL) -> Dataset:
    """One synthetic CT slice (int16 pixels from ``seed``), PatientName = ``patient``."""
    rng = np.random.default_rng(seed)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = CT
    ds.SOPInstanceUID = generate_uid(entropy_srcs=[series, str(index)])
    ds.file_meta.MediaStorageSOPClassUID = CT
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
    ds.FrameOfReferenceUID = generate_uid(entropy_srcs=[series, "frame-of-reference"])
    ds.PositionReferenceIndicator = ""
    ds.Modality = modality
    ds.PatientName, ds.PatientID = patient, "EDGEMED-PID-1"
    ds.PatientBirthDate, ds.PatientSex = "19700101", "O"
    ds.StudyDate, ds.StudyTime, ds.StudyID = "20260101", "101010", "1"
    ds.AccessionNumber, ds.ReferringPhysicianName = "ACC1", ""
    ds.SeriesNumber, ds.InstanceNumber = 1, index + 1
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.ImagePositionPatient = [0, 0, float(index)]
    ds.PixelSpacing, ds.SliceThickness = [1.0, 1.0], 1.0
    ds.Rows = ds.Columns = size
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
    ds.PixelData = rng.integers(0, 2000, (size, size), dtype=np.int16).tobytes()
    return ds


def series(n: int, *, seed: int, modality: str = "CT", study: str | None = None) -> list[Dataset]:
    """``n`` slices of one new series (UIDs derived from ``seed``)."""
    st = study or generate_uid(entropy_srcs=["study", str(seed)])
    se = generate_uid(entropy_srcs=["series", str(seed), modality])
    return [ct_slice(st, se, i, seed=seed * 1000 + i, modality=modality) for i in range(n)]


def to_bytes(ds: Dataset) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


# -- the bundle ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Model:
    trust: Path
    device_key: Path
    store: Path
    state: Path
    seal: Any  # seal(release, seed) -> sealed bundle path (same artifact shape)
    install: Any  # install(bundle) -> installed path
    device_pub: Path


@pytest.fixture(scope="session")
def model(tmp_path_factory: pytest.TempPathFactory) -> Model:
    from edgemed.bundle import Recipient, SealOptions, generate_keypair, seal
    from edgemed_runtime.bundle.install import install_bundle
    from tests.bundle.conftest import make_artifact

    d = tmp_path_factory.mktemp("node-model")
    pub = generate_keypair(d / "keys", kind="publisher", name="publisher")
    dev = generate_keypair(d / "keys", kind="device", name="node")

    def _seal(release: int, seed: int = 0, *, expires: datetime = EXPIRES) -> Path:
        art = make_artifact(d / f"art{release}-{seed}", seed=seed)
        return seal(art, d / f"tiny-r{release}-{seed}.edgemed", publisher_key=pub.private_path,
                    options=SealOptions(family="tiny", release=release, expires=expires),
                    recipients=[Recipient.load(dev.public_path)], created=CREATED)

    store, state = d / "store", d / "state"

    def _install(bundle: Path) -> Path:
        return install_bundle(bundle, store, trust=pub.public_path,
                              device_key=dev.private_path, state_dir=state)

    _install(_seal(1))
    return Model(pub.public_path, dev.private_path, store, state, _seal, _install,
                 dev.public_path)


# -- Orthanc -------------------------------------------------------------------------------
@dataclass
class Orthanc:
    http: int
    dicom: int
    folder: Path
    proc: subprocess.Popen[bytes]

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.http}{path}"

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.url(path), timeout=30) as r:
            data = r.read()
        return json.loads(data) if data[:1] in (b"[", b"{") else data

    def post(self, path: str, body: Any, timeout: float = 120) -> Any:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        req = urllib.request.Request(self.url(path), data=data, method="POST")
        with urllib.request.urlopen(req, timeout=timeout) as r:
            out = r.read()
        return json.loads(out) if out[:1] in (b"[", b"{") else out

    def upload(self, datasets: list[Dataset]) -> list[str]:
        """POST the instances; their Orthanc ids."""
        return [self.post("/instances", to_bytes(ds))["ID"] for ds in datasets]

    def send_series(self, datasets: list[Dataset], modality: str = "node") -> Any:
        """Upload the instances and have Orthanc C-STORE them to ``modality`` (synchronously)."""
        ids = self.upload(datasets)
        return self.post(f"/modalities/{modality}/store",
                         {"Resources": ids, "Synchronous": True})

    def find_sr(self) -> list[str]:
        return self.post("/tools/find", {"Level": "Instance", "Query": {"Modality": "SR"}})

    def instance(self, oid: str) -> Dataset:
        from pydicom import dcmread

        return dcmread(io.BytesIO(self.get(f"/instances/{oid}/file")))

    def clear(self) -> None:
        for pid in self.get("/patients"):
            req = urllib.request.Request(self.url(f"/patients/{pid}"), method="DELETE")
            urllib.request.urlopen(req, timeout=30).read()


DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")


def start_orthanc(folder: Path, modalities: dict[str, list[Any]], *, dicomweb: bool = False,
                  extra: dict[str, Any] | None = None) -> Orthanc:
    """Start Orthanc on 127.0.0.1 with a generated config (its own storage, no remote access);
    ``dicomweb``: load the DICOMweb plugin (Debian's orthanc-dicomweb) at ``/dicom-web/``;
    ``extra``: more configuration keys (DICOM TLS, say)."""
    exe = shutil.which("Orthanc")
    if exe is None:
        pytest.skip("Orthanc is not installed (apt-get install orthanc; .ci/run installs it)")
    http, dicom = free_port(), free_port()
    folder.mkdir(parents=True, exist_ok=True)
    cfg = {"Name": "edgemed-test", "StorageDirectory": str(folder / "db"),
           "IndexDirectory": str(folder / "db"), "DicomAet": ORTHANC_AET, "DicomPort": dicom,
           "HttpPort": http, "RemoteAccessAllowed": False, "AuthenticationEnabled": False,
           "DicomModalities": modalities, "DicomCheckCalledAet": False,
           "DicomAlwaysAllowStore": True, "Plugins": [], "HttpsCACertificates": "",
           "ConcurrentJobs": 4, "StorageCompression": False, "LogExportedResources": False,
           "DicomScuTimeout": 30, "DicomAssociationCloseDelay": 0, **(extra or {})}
    if dicomweb:
        if not DICOMWEB_PLUGIN.is_file():
            pytest.skip("Orthanc's DICOMweb plugin is not installed (apt-get install "
                        "orthanc-dicomweb; .ci/run installs it)")
        cfg["Plugins"] = [str(DICOMWEB_PLUGIN)]
        cfg["DicomWeb"] = {"Enable": True, "Root": "/dicom-web/"}
    (folder / "orthanc.json").write_text(json.dumps(cfg))
    log = open(folder / "orthanc.log", "wb")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen([exe, str(folder / "orthanc.json")], stdout=log, stderr=log)
    o = Orthanc(http, dicom, folder, proc)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            o.get("/system")
            return o
        except (urllib.error.URLError, ConnectionError, OSError):
            if proc.poll() is not None:
                raise RuntimeError((folder / "orthanc.log").read_text()[-2000:]) from None
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("Orthanc did not start")


def stop_orthanc(o: Orthanc) -> None:
    o.proc.terminate()
    try:
        o.proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        o.proc.kill()
        o.proc.wait()


@pytest.fixture(scope="module")
def node_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory: pytest.TempPathFactory, node_port: int) -> Iterator[Orthanc]:
    o = start_orthanc(tmp_path_factory.mktemp("orthanc"),
                      {"node": [NODE_AET, "127.0.0.1", node_port]})
    yield o
    stop_orthanc(o)


# -- the node ------------------------------------------------------------------------------
def node_toml(tmp: Path, model: Model, *, port: int, dest_port: int, extra: str = "",
              selection: str = "", retries: int = 2, backoff: float = 0.1,
              timeout: float = 1.0, max_bytes: int = 1 << 28, allowed: str = '"ORTHANC", '
              '"SENDER", "SENDER2"', node_extra: str = "", workers: str = "", dest_extra: str = "",
              grouping: str = "") -> Path:
    """Write a node.toml for a test and return its path."""
    (tmp / "scratch").mkdir(parents=True, exist_ok=True)
    text = f"""
[node]
ae_title = "{NODE_AET}"
host = "127.0.0.1"
port = {port}
allowed_calling_aes = [{allowed}]
{node_extra}

[model]
store = "{model.store}"
family = "tiny"
trust = "{model.trust}"
device_key = "{model.device_key}"
state_dir = "{model.state}"

[selection]
{selection}

[grouping]
timeout_s = {timeout}
{grouping}

[destination]
ae_title = "{ORTHANC_AET}"
host = "127.0.0.1"
port = {dest_port}
retries = {retries}
backoff_s = {backoff}
timeout_s = 10
dead_letter = "dead"
{dest_extra}

[spool]
dir = "spool"
key_file = "spool.key"
max_bytes = {max_bytes}
scratch_dir = "scratch"

[workers]
count = 2
queue = 16
{workers}

[metrics]
port = {free_port()}

[audit]
path = "audit.jsonl"
{extra}
"""
    p = tmp / "node.toml"
    p.write_text(text)
    return p


def wait_for(pred: Any, timeout: float = 60.0, every: float = 0.1) -> Any:
    """Poll ``pred()`` until truthy; return its value (fail the test on timeout)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s waiting for {pred}")


def send_pynetdicom(datasets: list[Dataset], port: int, *, calling: str = "SENDER",
                    ssl_context: Any = None, contexts: list[tuple[str, str]] | None = None
                    ) -> list[int]:
    """C-STORE the datasets over one association (pynetdicom as the second sender); the
    statuses (-1: association not established)."""
    from pynetdicom import AE

    ae = AE(ae_title=calling)
    for sop, ts in contexts or [(CT, ExplicitVRLittleEndian)]:
        ae.add_requested_context(sop, [ts])
    tls = (ssl_context, "localhost") if ssl_context is not None else None
    assoc = ae.associate("127.0.0.1", port, ae_title=NODE_AET, tls_args=tls)
    if not assoc.is_established:
        return [-1] * len(datasets)
    try:
        out = []
        for ds in datasets:
            st = assoc.send_c_store(ds)
            out.append(int(st.Status) if st else -2)
        return out
    finally:
        assoc.release()
