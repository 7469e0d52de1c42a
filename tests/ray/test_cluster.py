"""On a real local Ray cluster: resources, latency on a target node, fleet bench, Ray Data gate."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgemed.distributed import (fleet_bench, gate_on_ray, logits_local, logits_on_ray,
                                 nodes_with, remote_latency, require_target)
from edgemed.errors import InvalidInputError
from edgemed.evaluate import GateConfig

from .helpers import SPEC, dicom_set, int8_of, tiny_onnx



def test_nodes_carry_their_targets(ray_cluster) -> None:
    x86 = nodes_with("cpu-x86")
    ov = nodes_with("openvino-cpu")
    assert len(x86) == 2 and len(ov) == 1
    assert ov[0]["node_id"] in {n["node_id"] for n in x86}
    assert ray_cluster.agents["dev-a"]["resources"] == {"target:cpu-x86": 1.0,
                                                        "target:openvino-cpu": 1.0}
    with pytest.raises(InvalidInputError) as e:
        require_target("cpu-arm64", wait_s=1)
    assert e.value.code == "no-target-node" and "target:cpu-arm64" in e.value.message


def test_latency_is_measured_on_a_target_node(ray_cluster, tmp_path: Path) -> None:
    a, b = tiny_onnx(tmp_path / "a.onnx"), int8_of(tiny_onnx(tmp_path / "b.onnx"), tmp_path / "q.onnx")
    x = np.random.default_rng(0).standard_normal((1, 1, 8, 8)).astype(np.float32)
    lat, where = remote_latency({"cand": b, "ref": a}, x, target="openvino-cpu", runs=10)
    assert set(lat) == {"cand", "ref"} and all(v > 0 for v in lat.values())
    assert where["latency_node_id"] == nodes_with("openvino-cpu")[0]["node_id"]
    assert where["latency_device_id"] == "dev-a"
    assert all(where["latency_p99_ms"][k] >= lat[k] for k in lat)


def _bundle(ray_cluster, tmp_path: Path) -> Path:
    from edgemed.bundle import Recipient, SealOptions, seal
    from edgemed_runtime import Artifact, IOSpec

    d = tmp_path / "art"
    tiny_onnx(d / "model.onnx")
    art = Artifact(path=d, format="onnx", model_file="model.onnx",
                   io=IOSpec(input_shape=(1, 1, 8, 8), labels=("a", "b")), preprocess=SPEC,
                   metrics={"gate": {"passed": True}}, target={"name": "cpu-x86", "hash": "0" * 64})
    art.save()
    return seal(art, tmp_path / "tiny.edgemed", publisher_key=ray_cluster.keys["publisher"],
                options=SealOptions(family="tiny", release=1),
                recipients=[Recipient.load(ray_cluster.keys["device_pub"])])


def test_fleet_bench_one_row_per_device(ray_cluster, tmp_path: Path) -> None:
    bundle = _bundle(ray_cluster, tmp_path)
    res = fleet_bench(bundle, target="cpu-x86", runs=20, warmup=2, threads=1)
    assert sorted(r["device_id"] for r in res.rows) == ["dev-a", "dev-b"]
    assert {r["node_id"] for r in res.rows} == {n["node_id"] for n in nodes_with("cpu-x86")}
    for r in res.rows:
        assert r["error"] is None and 0 < r["p50_ms"] <= r["p99_ms"] and r["peak_rss_mb"] > 10
        assert r["runtime"] and r["versions"]["onnxruntime"] and r["cpu"]
    assert res.spread["devices"] == 2 and res.spread["max_over_min"] >= 1.0
    doc = json.dumps(res.to_dict())
    assert "SYN" not in doc  # no patient id: the input is synthetic, only timings come back
    html = res.html()
    assert "dev-a" in html and "dev-b" in html
    # the CLI: table, JSON and HTML from one command
    out = subprocess.run(
        [str(Path(sys.executable).parent / "edgemed"), "bench", str(bundle), "--ray",
         ray_cluster.address, "--target", "openvino-cpu", "--runs", "10", "--warmup", "2",
         "--threads", "1", "--json", "--save", str(tmp_path / "f.json"), "--html",
         str(tmp_path / "f.html")], env=ray_cluster.env, capture_output=True, text=True,
        timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    cli = json.loads(out.stdout)
    assert [r["device_id"] for r in cli["rows"]] == ["dev-a"]
    assert json.loads((tmp_path / "f.json").read_text())["target"] == "openvino-cpu"
    assert "dev-a" in (tmp_path / "f.html").read_text()


def test_fleet_bench_refusals(ray_cluster, tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError) as e:
        fleet_bench(tmp_path / "missing.edgemed", target="cpu-x86")
    assert e.value.code == "not-found"
    (tmp_path / "b.edgemed").write_bytes(b"x")
    with pytest.raises(InvalidInputError) as e:
        fleet_bench(tmp_path / "b.edgemed", target="cpu-arm64")
    assert e.value.code == "no-target-node"


def test_ray_data_gate_equals_single_process(ray_cluster, tmp_path: Path) -> None:
    files, y = dicom_set(tmp_path / "dicom", 60)
    ref = tiny_onnx(tmp_path / "ref.onnx", seed=3)
    cand = int8_of(ref, tmp_path / "cand.onnx")
    local = logits_local(ref, files, preprocess=SPEC)
    dist = logits_on_ray(ref, files, preprocess=SPEC, actors=2, batch_size=16)
    assert np.array_equal(local, dist)
    cfg = GateConfig(bootstrap=200)
    a = gate_on_ray(ref, cand, files, y, cfg, address=ray_cluster.address, preprocess=SPEC)
    b = gate_on_ray(ref, cand, files, y, cfg, preprocess=SPEC)
    assert json.dumps(a.to_dict(), sort_keys=True, default=str) == json.dumps(b.to_dict(), sort_keys=True, default=str)
