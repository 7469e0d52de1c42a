"""``bench`` on a sealed bundle: cold start goes through verify + decrypt + session creation."""

from __future__ import annotations

import pytest

from edgemed.bench.api import bench
from edgemed.bench.runner import BenchConfig


@pytest.fixture(scope="module")
def sealed(tiny_artifact, tmp_path_factory):
    bundle = pytest.importorskip("edgemed.bundle")
    d = tmp_path_factory.mktemp("bundle")
    pub = bundle.generate_keypair(d, kind="publisher", name="pub")
    dev = bundle.generate_keypair(d, kind="device", name="dev")
    path = bundle.seal(tiny_artifact.path, d / "tiny.edgemed", publisher_key=pub.private_path,
                       options=bundle.SealOptions(family="tiny", release=1),
                       recipients=[bundle.Recipient.load(dev.public_path)])
    return path, pub, dev, d / "state"


def test_bundle_is_opened_through_the_runtime(sealed, tiny_artifact, bench_cache) -> None:
    path, pub, dev, state = sealed
    res = bench(path, trust=pub.public_path, device_key=dev.private_path,
                bundle_args={"state_dir": str(state)},
                reference=tiny_artifact.path / "reference" / "model.onnx", dicom=None,
                config=BenchConfig(runs=3, warmup=1, processes=1, cold_processes=1),
                ceilings=False)
    c = res.data["candidates"]
    assert c["edgemed"]["label"].startswith("edgemed bundle")
    assert "error" not in c["edgemed"], c["edgemed"].get("error")
    assert c["edgemed"]["cold"]["open_ms"]["median"] > 0
    assert c["edgemed"]["agreement_with_baseline"]["top1_agreement"] >= 0.9
    assert c["edgemed"]["size_bytes"] > 0
