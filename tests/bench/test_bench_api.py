"""A real (small) benchmark run: structure, correctness of every candidate, cold start, memory,
end to end, efficiency, load and budget. No figure here is a speed assertion."""

from __future__ import annotations

import json

import pytest

from edgemed.bench.api import BenchResult, bench
from edgemed.bench.runner import BenchConfig
from edgemed.errors import InvalidInputError

PEERS = ("ort-fp32", "ort-quantize_static", "nncf+openvino")


def test_every_candidate_timed_in_every_process(tiny_bench) -> None:
    d = tiny_bench.data
    assert d["kind"] == "edgemed-bench" and d["baseline"] == "ort-fp32"
    assert d["order"][0] == "edgemed" and set(PEERS) <= set(d["order"])
    for name in d["order"]:
        c = d["candidates"][name]
        assert "error" not in c, c.get("error")
        assert c["latency_ms"]["runs"] == 6 * 2
        assert len(c["process_p50_ms"]["per_process"]) == 2
        assert c["latency_ms"]["p50"] <= c["latency_ms"]["p99"]
        assert set(c["throughput"]) == {"1", "4"}
        assert len(c["samples_ms"]) == 12


def test_outputs_agree_with_fp32(tiny_bench) -> None:
    c = tiny_bench.data["candidates"]
    for name in ("edgemed", "ort-quantize_static", "nncf+openvino"):
        agree = c[name]["agreement_with_baseline"]
        assert agree["top1_agreement"] >= 0.9, (name, agree)
        assert agree["logit_cosine"] > 0.95, (name, agree)


def test_cold_start_memory_size_and_macs(tiny_bench) -> None:
    c = tiny_bench.data["candidates"]
    for name in tiny_bench.data["order"]:
        cold = c[name]["cold"]
        assert cold["open_ms"]["median"] > 0 and cold["first_inference_ms"]["median"] > 0
        assert cold["peak_rss_mb"]["median"] > 10
        assert c[name]["size_bytes"] > 0
    assert c["edgemed"]["precision"] == "int8" and c["ort-fp32"]["precision"] == "fp32"
    assert c["edgemed"]["gmacs"] == pytest.approx(c["ort-fp32"]["gmacs"])
    eff = c["edgemed"]["efficiency"]
    inrun = tiny_bench.data["inrun_ceilings"]
    assert eff["ceiling_gmacs_per_s"] == pytest.approx(inrun["int8"]["median"], abs=0.01)
    assert "same processes" in eff["ceiling_from"] and eff["fraction_of_ceiling"] > 0
    assert len(inrun["fp32"]["per_process"]) == 2 and inrun["fp32"]["median"] > 0
    assert tiny_bench.data["ceilings"]["int8_gmacs"] > 0


def test_end_to_end_from_dicom_beside_model_only(tiny_bench) -> None:
    d = tiny_bench.data
    e = d["candidates"]["edgemed"]
    assert d["data"]["dicom"] and e["end_to_end_ms"]["runs"] == 12
    assert d["decode+preprocess_ms"]["runs"] == 12
    assert e["end_to_end_over_model"] > 0


def test_ratios_load_backends_and_json(tiny_bench) -> None:
    d = tiny_bench.data
    rows = {r["name"]: r for r in d["ratio_table"]}
    assert set(rows) == set(d["order"])
    assert "vs_fp32" in rows["edgemed"] and "vs_best_peer" in rows["edgemed"]
    assert rows["edgemed"]["size_vs_fp32"] > 0  # a tiny model: QDQ overhead can exceed FP32
    r = d["candidates"]["edgemed"]["ratio_to_baseline"]
    assert r["min"] <= r["median"] <= r["max"]
    assert d["load"]["samples"] >= 1 and d["load"]["cores"] >= 1
    assert "not registered" in d["skipped"]["edgemed@no-such-backend"]
    assert d["budget"]["checked"] and d["budget"]["target"] == "cpu-x86"
    again = BenchResult(json.loads(tiny_bench.to_json()))
    assert again.data["order"] == d["order"]


def test_result_round_trip_and_bad_results(tmp_path, tiny_bench) -> None:
    p = tiny_bench.save(tmp_path / "r.json")
    assert BenchResult.load(p).data["order"] == tiny_bench.data["order"]
    (tmp_path / "x.json").write_text('{"kind": "other"}')
    with pytest.raises(InvalidInputError):
        BenchResult.load(tmp_path / "x.json")
    with pytest.raises(InvalidInputError):
        BenchResult.load(tmp_path / "missing.json")


@pytest.mark.parametrize("field,value", [("runs", 0), ("processes", 0), ("threads", 0),
                                         ("batch_sizes", (0,)), ("warmup", -1)])
def test_bad_config_is_refused(field, value) -> None:
    cfg = BenchConfig(**{field: value})
    with pytest.raises(InvalidInputError):
        cfg.check()


def test_bad_sources(tmp_path) -> None:
    with pytest.raises(InvalidInputError) as e:
        bench(tmp_path / "missing")
    assert e.value.code == "not-found"
    f = tmp_path / "notes.txt"
    f.write_text("hello")
    with pytest.raises(InvalidInputError) as e:
        bench(f)
    assert e.value.code == "not-a-model"


def test_a_broken_candidate_is_reported_and_the_others_still_run(tiny_artifact, tmp_path) -> None:
    from edgemed.bench.candidates import Candidate
    from edgemed.bench.runner import measure

    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"\x08\x01garbage")
    good = Candidate("fp32", "onnx", str(tiny_artifact.path / "reference" / "model.onnx"),
                     options={"threads": 1})
    m = measure([good, Candidate("broken", "onnx", str(bad))],
                BenchConfig(runs=2, warmup=0, processes=1, cold_processes=1),
                sample_shape=(1, 16, 16), preprocess=None, check=None, dicom=None)
    assert "broken" in m.errors and "broken" not in m.latency
    assert len(m.latency["fp32"][0]) == 2 and m.cold["fp32"][0]["open_ms"] > 0


def test_a_model_spec_is_built_first(bench_cache, tmp_path) -> None:
    """``bench("pkg.mod:factory")`` builds the model for the target, then times the artifact."""
    from pathlib import Path

    src = (Path(__file__).resolve().parents[2] / "targets" / "cpu-x86.toml").read_text()
    head = src[:src.index("[[variants]]")]
    rr = src[src.index('[[variants]]\nname = "ort-int8-rr"'):]
    one_variant = head + rr[:rr.index("[[variants]]", 1)]  # ort-int8-rr (+ the FP32 baseline)
    profile = tmp_path / "cpu-x86-u8s8.toml"
    profile.write_text(one_variant.replace('name = "cpu-x86"', 'name = "cpu-x86-u8s8"'))
    res = bench("tests.helpers.tiny_models:make_net", input_shape=(1, 1, 16, 16), target=str(profile),
                dicom=None, ceilings=False,
                config=BenchConfig(runs=2, warmup=0, processes=1, cold_processes=0))
    d = res.data
    assert d["built_from"] == "tests.helpers.tiny_models:make_net" and Path(d["artifact"]).is_dir()
    from edgemed_runtime.artifact import Artifact

    chosen = Artifact.load(d["artifact"]).target["variant"]  # INT8, or FP32 if that is faster here
    assert chosen in ("ort-int8-rr", "fp32-baseline")
    assert d["candidates"]["edgemed"]["label"].startswith(f"edgemed cpu-x86-u8s8 {chosen}")
    assert d["candidates"]["edgemed"]["agreement_with_baseline"]["top1_agreement"] >= 0.9
    assert d["budget"]["checked"] and d["budget"]["target"] == "cpu-x86-u8s8"
