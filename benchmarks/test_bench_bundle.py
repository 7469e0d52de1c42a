"""Bundle bars (issue 4), measured with pytest-benchmark on a 45 MB ONNX model in one run:

    pytest benchmarks/test_bench_bundle.py --benchmark-enable -s

1. verify + decrypt throughput >= 300 MiB/s (read from disk, OMS signature, SHA-256 of every
   file, unwrap, key commitment, AES-256-GCM stream), beside one-shot AES-GCM and SHA-256 of the
   same bytes;
2. open -> first inference <= 1.3x creating a plain onnxruntime session from the unencrypted
   file (same session options).

Times compared are each side's best round (min), the usual statistic on a shared machine;
medians are printed too. (The no-plaintext-on-disk bar is tests/bundle/test_roundtrip.py.)
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

MIB = 1 << 20
TIMES: dict[str, tuple[float, float]] = {}
X = np.zeros((1, 1, 8, 8), np.float32)


def _record(name: str, benchmark: Any) -> None:
    stats = getattr(benchmark, "stats", None)
    if stats is not None and getattr(stats, "stats", None) is not None:
        TIMES[name] = (stats.stats.min, stats.stats.median)


@dataclass(frozen=True)
class Big:
    model: Path
    bundle: Path
    bundle_inline: Path
    trust: Path
    device_key: Path
    state: Path
    payload_bytes: int
    ciphertext: bytes


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Big:
    """A 45 MB ONNX MLP (seeded), sealed twice: split weights (the default for a model this
    size) and inline (one payload, for comparison)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from edgemed.bundle import Recipient, SealOptions, generate_keypair, seal
    from edgemed_runtime import Artifact, IOSpec, PreprocessSpec

    d = tmp_path_factory.mktemp("bench-bundle")
    rng = np.random.default_rng(0)
    shapes = [(64, 2048), (2048, 5632), (5632, 2)]
    inits = [numpy_helper.from_array((rng.standard_normal(s) * 0.01).astype(np.float32), f"W{i}")
             for i, s in enumerate(shapes)]
    nodes = [helper.make_node("Flatten", ["input"], ["r0"])]
    for i in range(3):
        out = "logits" if i == 2 else f"m{i}"
        nodes.append(helper.make_node("MatMul", [f"r{i}", f"W{i}"], [out]))
        if i < 2:
            nodes.append(helper.make_node("Relu", [out], [f"r{i + 1}"]))
    g = helper.make_graph(nodes, "mlp45", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 8, 8])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 2])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 9
    art_dir = d / "art"
    art_dir.mkdir()
    onnx.save(m, art_dir / "model.onnx")
    art = Artifact(path=art_dir, format="onnx", model_file="model.onnx",
                   io=IOSpec(input_shape=(1, 1, 8, 8), labels=("a", "b")),
                   preprocess=PreprocessSpec(size=(8, 8)))
    art.save()
    pub = generate_keypair(d / "k", kind="publisher")
    dev = generate_keypair(d / "k", kind="device", name="dev")
    recips = [Recipient.load(dev.public_path)]
    b = seal(art, d / "bundle", publisher_key=pub.private_path,
             options=SealOptions(family="bench", release=1), recipients=recips)
    b2 = seal(art, d / "bundle-inline", publisher_key=pub.private_path,
              options=SealOptions(family="bench", release=1, split_weights=False), recipients=recips)
    payloads = sorted((b / "payload").iterdir(), key=lambda p: p.stat().st_size)
    ct = payloads[-1].read_bytes()
    assert len(ct) > 44 * MIB
    # dense weights: compression "auto" keeps them stored as is (the zero-copy open path)
    man = json.loads((b / "bundle.json").read_bytes())
    assert [p["compression"] for p in man["payloads"] if p["role"] == "weights"] == ["none"]
    return Big(art_dir / "model.onnx", b, b2, pub.public_path, dev.private_path, d / "state",
               sum(p.stat().st_size for p in payloads), ct)


# -- 1. throughput ---------------------------------------------------------------------------
@pytest.mark.benchmark(group="bundle-throughput-45MB")
def test_sha256_oneshot(benchmark: Any, big: Big) -> None:
    benchmark.pedantic(lambda: hashlib.sha256(big.ciphertext).digest(), rounds=7, warmup_rounds=1)
    _record("sha256", benchmark)


@pytest.mark.benchmark(group="bundle-throughput-45MB")
def test_aesgcm_oneshot(benchmark: Any, big: Big) -> None:
    import os

    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    aead, nonce = AESGCM(os.urandom(32)), os.urandom(12)
    ct = aead.encrypt(nonce, big.ciphertext[:-16 * 45], None)
    benchmark.pedantic(lambda: aead.decrypt(nonce, ct, None), rounds=7, warmup_rounds=1)
    _record("aesgcm", benchmark)


@pytest.mark.benchmark(group="bundle-throughput-45MB")
def test_verify_decrypt(benchmark: Any, big: Big) -> None:
    from edgemed_runtime.bundle import decrypt_payloads, verify_bundle
    from edgemed_runtime.bundle.loader import wipe

    def run() -> None:
        vb = verify_bundle(big.bundle, trust=big.trust, defer_payload_hashes=True)
        wipe(decrypt_payloads(vb, big.device_key))

    benchmark.pedantic(run, rounds=7, warmup_rounds=1)
    _record("verify+decrypt", benchmark)


def test_bar_verify_decrypt_throughput() -> None:
    if "verify+decrypt" not in TIMES:
        pytest.skip("run with --benchmark-enable")
    size = 45 * MIB
    rates = {k: size / MIB / v[0] for k, v in TIMES.items() if k in ("sha256", "aesgcm", "verify+decrypt")}
    print("\nthroughput MiB/s (best round):", {k: round(v) for k, v in rates.items()})
    assert rates["verify+decrypt"] >= 300


# -- 2. open -> first inference ----------------------------------------------------------------
@pytest.mark.benchmark(group="bundle-open-45MB")
def test_plain_ort_session(benchmark: Any, big: Big) -> None:
    import onnxruntime as ort

    from edgemed_runtime.backends.onnxruntime import session_options

    def run() -> Any:
        return ort.InferenceSession(str(big.model), sess_options=session_options({}),
                                    providers=["CPUExecutionProvider"])

    benchmark.pedantic(run, rounds=9, warmup_rounds=1)
    _record("plain-session", benchmark)


def _open_first(bundle: Path, big: Big) -> Any:
    from edgemed_runtime.bundle import open_bundle

    # one state folder per bundle: both are release 1 of the same family
    s = open_bundle(bundle, trust=big.trust, device_key=big.device_key,
                    state_dir=big.state / bundle.name)
    s.run({"input": X})
    return s


def _bench_open(benchmark: Any, bundle: Path, big: Big, record: str) -> None:
    """Time open + first inference of ``bundle``; each round's session is closed outside the
    timed part."""
    opened: list[Any] = []

    def setup() -> None:
        while opened:
            opened.pop().close()

    benchmark.pedantic(lambda: opened.append(_open_first(bundle, big)), setup=setup,
                       rounds=9, warmup_rounds=1)
    setup()
    _record(record, benchmark)


@pytest.mark.benchmark(group="bundle-open-45MB")
def test_bundle_open_first_inference(benchmark: Any, big: Big) -> None:
    _bench_open(benchmark, big.bundle, big, "bundle-open")


@pytest.mark.benchmark(group="bundle-open-45MB")
def test_bundle_inline_open_first_inference(benchmark: Any, big: Big) -> None:
    """For comparison: the same model sealed as one inline payload (ORT parses 45 MB of bytes)."""
    _bench_open(benchmark, big.bundle_inline, big, "bundle-inline-open")


def test_bar_open_to_first_inference() -> None:
    if "bundle-open" not in TIMES or "plain-session" not in TIMES:
        pytest.skip("run with --benchmark-enable")
    base = TIMES["plain-session"][0]
    ratios = {k: round(v[0] / base, 3) for k, v in TIMES.items() if k.startswith("bundle")}
    print(f"\nplain session {base * 1000:.1f} ms (median {TIMES['plain-session'][1] * 1000:.1f}); "
          f"ratios (best round): {ratios}")
    assert ratios["bundle-open"] <= 1.3
