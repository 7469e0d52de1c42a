"""Signed but malformed: a seeded mutation fuzzer over bundle.json and the weights index.

Each mutation is re-signed with the trusted publisher key (and, for the weights payload,
re-encrypted under the bundle's data key), so signature, digests and AES-GCM all pass and what is
tested is everything after them: the manifest schema, the weights index parser, the backend and
the smoke inference. Every mutation must either open or raise an EdgemedError; a raw
IndexError / MemoryError / OverflowError / TypeError / RecursionError... fails the test.
"""

from __future__ import annotations

import copy
import json
import random
import struct
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest

from edgemed.bundle.signing import sign_files
from edgemed_runtime.bundle import BundleFiles, RollbackState, open_verified, read_bundle, verify_bundle
from edgemed_runtime.bundle.crypto import encrypt_stream
from edgemed_runtime.bundle.format import PayloadEntry, canonical_json
from edgemed_runtime.bundle.keys import load_private_key, load_public_key
from edgemed_runtime.errors import EdgemedError

from .conftest import NOW, Keys
from .test_hash_before_parse import data_key

N_MANIFEST = 2000  # mutations of bundle.json
N_WEIGHTS = 1000  # mutations of the weights payload (index and header)
SEED = 20260601

# Sentinels replaced in the serialised text by what json.dumps cannot write.
_RAW = {
    "\x01INF": "Infinity", "\x01NINF": "-Infinity", "\x01NAN": "NaN", "\x01E999": "1e999",
    "\x01BIGINT": "1" + "0" * 5000, "\x01DEEP": "[" * 20000 + "]" * 20000,
    "\x01NESTED": "[" * 40 + "1" + "]" * 40,
}
NASTY: list[Any] = [
    "", "x", "A" * 5000, "../x", "\u0000", "\u00e9" * 64, "CHW", "float16", "onnxruntime",
    [], [1], [1, 1, 2 ** 32, 32], [1, 2], [0, 0], [-1, 8], [[[]]], ["cuda"], [2], [1.5, 2.5],
    {}, {"a": 1}, {"name": []}, None, True, False,
    0, -1, 1, 2, 3, 7, 2 ** 31 - 1, 2 ** 31, 2 ** 32, 2 ** 63, 2 ** 64, 10 ** 30,
    0.5, 1.5, -0.0, 1e308, 1e-300, *_RAW,
]
OPTION_KEYS = ["threads", "inter_threads", "graph_optimization", "providers", "device",
               "precision", "saved_runtime_optimizations", "static_batch", "num_streams",
               "performance_hint", "recipe", "extra_files", "nnapi_flags"]


def _nasty(rng: random.Random) -> Any:
    return copy.deepcopy(rng.choice(NASTY))


def _nudge(rng: random.Random, v: Any) -> Any:
    if isinstance(v, bool):
        return not v
    if isinstance(v, int):
        return rng.choice([v + 1, v - 1, -v, v * 2 ** 16, v * 2 ** 40, 0, str(v), float(v)])
    if isinstance(v, float):
        return rng.choice([-v, v * 1e300, 0.0, int(v), str(v), "\x01INF", "\x01NAN"])
    if isinstance(v, str):
        return rng.choice([v + v, v[:-1], v.upper(), v * 300, [v], v + "\u0000", ""])
    if isinstance(v, list):
        return rng.choice([v[:-1], v + v, v[::-1], [v], {"0": v}, v * 1000])
    if isinstance(v, dict):
        return rng.choice([list(v.values()), [v], {}, {k: None for k in v}])
    return _nasty(rng)


def _pick(rng: random.Random, root: Any, top: list[str] | None) -> tuple[Any, Any]:
    """A random (container, key/index) in the tree: a top-level key first (from ``top`` if
    given), then deeper with probability 0.6 per level."""
    parent: Any = root
    key: Any = rng.choice(top) if top and isinstance(root, dict) and rng.random() < 0.8 \
        else (rng.choice(list(root)) if isinstance(root, dict) else rng.randrange(len(root)))
    if isinstance(root, dict) and key not in root:
        key = rng.choice(list(root))
    while rng.random() < 0.6:
        child = parent[key]
        if isinstance(child, dict) and child:
            parent, key = child, rng.choice(list(child))
        elif isinstance(child, list) and child:
            parent, key = child, rng.randrange(len(child))
        else:
            break
    return parent, key


def mutate(rng: random.Random, doc: Any, top: list[str] | None = None) -> None:
    """Apply 1-3 random mutations to a JSON document in place."""
    for _ in range(rng.choice([1, 1, 2, 3])):
        if not doc:
            return
        parent, key = _pick(rng, doc, top)
        op = rng.random()
        if op < 0.35:
            parent[key] = _nasty(rng)
        elif op < 0.6:
            parent[key] = _nudge(rng, parent[key])
        elif op < 0.72:
            del parent[key]
        elif op < 0.9:
            target = parent[key] if isinstance(parent[key], (dict, list)) else parent
            if isinstance(target, dict):
                target[rng.choice([*OPTION_KEYS, "zz_unknown", "name", "shape", "window"])] = _nasty(rng)
            else:
                target.insert(rng.randrange(len(target) + 1), _nasty(rng))
        else:
            parent[key] = [parent[key]] if rng.random() < 0.5 else str(parent[key])


def dumps(doc: Any) -> bytes:
    text = json.dumps(doc, sort_keys=True)
    for token, raw in _RAW.items():
        text = text.replace(json.dumps(token), raw)
    return text.encode()


@dataclass
class Fuzz:
    """A split-weights bundle in memory plus everything needed to re-sign and re-encrypt it."""

    files: dict[str, bytes]
    keys: dict[str, bytes]
    manifest: dict[str, Any]
    data_key: bytes
    publisher: Any  # private key: signs every mutation
    trust: Any  # its public key, pinned
    device_key: Any
    state: RollbackState

    def attempt(self, files: dict[str, bytes]) -> str:
        """Sign ``files``, verify and open them; return the error code ('opened' on success),
        or ``RAW <type>: <text>`` for an exception outside the EdgemedError tree."""
        bf = BundleFiles(Path("fuzz"), False, sign_files(files, self.publisher, "fuzz"), files,
                         self.keys)
        try:
            vb = verify_bundle(bf, trust=self.trust, now=NOW)
            open_verified(vb, device_key=self.device_key, state=self.state,
                          persist=False).close()
            return "opened"
        except EdgemedError as exc:
            return exc.code
        except Exception as exc:  # noqa: BLE001 - what this test looks for
            return f"RAW {type(exc).__name__}: {str(exc)[:120]}"


@pytest.fixture(scope="module")
def fuzz(keys: Keys, make_bundle: Callable[..., Path], tmp_path_factory: pytest.TempPathFactory) -> Fuzz:
    b = make_bundle(tmp_path_factory.mktemp("fuzz") / "b", 2, split_weights=True, compression="none")
    bf = read_bundle(b)
    dk, _ = data_key(b, keys)
    return Fuzz(dict(bf.files), dict(bf.keys), json.loads(bf.files["bundle.json"]), dk,
                load_private_key(keys.publisher.private_path),
                load_public_key(keys.publisher.public_path),
                load_private_key(keys.device.private_path),
                RollbackState(tmp_path_factory.mktemp("fuzz-state")))


def _report(results: Counter[str], what: str) -> None:
    raw = {k: v for k, v in results.items() if k.startswith("RAW")}
    print(f"\n{what}: {sum(results.values())} signed mutations, {sum(raw.values())} raw exceptions; "
          f"outcomes: {dict(results.most_common())}")
    assert not raw, f"{sum(raw.values())} exceptions outside the EdgemedError tree: {raw}"


def test_pristine_fuzz_base_opens(fuzz: Fuzz) -> None:
    assert fuzz.attempt(dict(fuzz.files)) == "opened"


def test_signed_manifest_mutations_raise_only_edgemed_errors(fuzz: Fuzz) -> None:
    rng = random.Random(SEED)
    top = [*["io", "preprocess", "backend_options"] * 3, "payloads", "payloads", "target",
           "labels", "hardware_ids", "encryption", *fuzz.manifest]
    results: Counter[str] = Counter()
    for _ in range(N_MANIFEST):
        doc = copy.deepcopy(fuzz.manifest)
        mutate(rng, doc, top)
        results[fuzz.attempt({**fuzz.files, "bundle.json": dumps(doc)})] += 1
    _report(results, "bundle.json")
    assert results["opened"] > 0 and len(results) >= 8, "the mutator must reach past the schema"


def _weights_variant(rng: random.Random, plain: bytes) -> bytes:
    """A mutated weights payload: its JSON index (structure) or its binary header / data."""
    (n,) = struct.unpack(">I", plain[12:16])
    index = json.loads(plain[16:16 + n])
    data_start = 16 + n + (-(16 + n) % 64)
    data = plain[data_start:]
    op = rng.random()
    if op < 0.7:
        mutate(rng, index)
        head = dumps(index)
        header = plain[:8] + struct.pack(">II", 1, len(head)) + head
        return header + b"\0" * (-len(header) % 64) + data
    if op < 0.8:  # header fields
        v = bytearray(plain)
        v[rng.randrange(16)] ^= 1 << rng.randrange(8)
        return bytes(v)
    if op < 0.9:  # declared index length
        k = rng.choice([0, 1, n - 1, n + 1, len(plain), 2 ** 32 - 1])
        return plain[:12] + struct.pack(">I", k) + plain[16:]
    cut = rng.randrange(len(plain))  # truncated or extended
    return plain[:cut] if rng.random() < 0.5 else plain + b"\0" * rng.choice([1, 64, 4096])


def test_signed_weights_index_mutations_raise_only_edgemed_errors(fuzz: Fuzz) -> None:
    from edgemed_runtime.bundle.crypto import decrypt_stream

    m = fuzz.manifest
    bid = bytes.fromhex(m["bundle_id"])
    wi = next(i for i, p in enumerate(m["payloads"]) if p["role"] == "weights")
    wp = m["payloads"][wi]
    entry = PayloadEntry(path=wp["path"], name=wp["name"], role="weights",
                         plaintext_length=wp["plaintext_length"], chunk_size=wp["chunk_size"])
    plain = bytes(decrypt_stream(fuzz.data_key, bid, entry, m["release"], fuzz.files[wp["path"]]))
    rng = random.Random(SEED + 1)
    results: Counter[str] = Counter()
    for _ in range(N_WEIGHTS):
        new = _weights_variant(rng, plain)
        e = PayloadEntry(path=entry.path, name=entry.name, role="weights",
                         plaintext_length=len(new), chunk_size=entry.chunk_size)
        doc = copy.deepcopy(m)
        doc["payloads"][wi].update(plaintext_length=e.plaintext_length,
                                   ciphertext_length=e.ciphertext_length)
        files = {**fuzz.files, "bundle.json": canonical_json(doc),
                 entry.path: encrypt_stream(fuzz.data_key, bid, e, m["release"], new)}
        results[fuzz.attempt(files)] += 1
    _report(results, "weights payload")
    assert results["weights-invalid"] > 0 and len(results) >= 3


def _set(path: str, value: Any) -> Callable[[dict], None]:
    def edit(doc: dict) -> None:
        *head, last = path.split(".")
        node: Any = doc
        for k in head:
            node = node[int(k)] if isinstance(node, list) else node[k]
        node[int(last) if isinstance(node, list) else last] = value
    return edit


# The reported cases (docs/bundle-format.md, "bundle.json": schema and limits), one by one.
DIRECTED = [
    ("size-empty-string", _set("preprocess.size", "")),
    ("window-one-value", _set("preprocess.window", [1])),
    ("input-shape-512-GiB", _set("io.input_shape", [1, 1, 2 ** 32, 32])),
    ("input-shape-inf", _set("io.input_shape", [1, 1, "\x01INF", 8])),
    ("mean-inf", _set("preprocess.mean", "\x01INF")),
    ("std-nan", _set("preprocess.std", "\x01NAN")),
    ("threads-list", _set("backend_options.threads", [2])),
    ("threads-huge", _set("backend_options.threads", 2 ** 40)),
    ("graph-optimization-unknown", _set("backend_options.graph_optimization", "max")),
    ("release-bool", _set("release", True)),
    ("labels-deep", _set("labels", "\x01DEEP")),
    ("metrics-nested-too-deep", _set("metrics.gate", "\x01NESTED")),
    ("bigint", _set("release", "\x01BIGINT")),
    ("unknown-field", _set("zz_unknown", 1)),
    ("io-unknown-field", _set("io.zz_unknown", 1)),
    ("payload-unknown-field", _set("payloads.0.zz_unknown", 1)),
]


@pytest.mark.parametrize("edit", [e for _, e in DIRECTED], ids=[n for n, _ in DIRECTED])
def test_reported_malformed_manifests_are_manifest_invalid(edit: Callable[[dict], None],
                                                           fuzz: Fuzz) -> None:
    doc = copy.deepcopy(fuzz.manifest)
    edit(doc)
    assert fuzz.attempt({**fuzz.files, "bundle.json": dumps(doc)}) == "manifest-invalid"


def test_duplicate_keys_in_a_manifest_are_refused(fuzz: Fuzz) -> None:
    text = canonical_json(fuzz.manifest).replace(b'  "release": 2,', b'  "release": 2,\n  "release": 3,')
    assert text != canonical_json(fuzz.manifest)
    assert fuzz.attempt({**fuzz.files, "bundle.json": text}) == "manifest-invalid"


def _weights_blob(index_text: bytes, data: bytes = b"\0" * 256) -> bytearray:
    from edgemed_runtime.bundle.weights import MAGIC

    header = MAGIC + struct.pack(">II", 1, len(index_text)) + index_text
    return bytearray(header + b"\0" * (-len(header) % 64) + data)


_GOOD = {"name": "w", "dtype": "float32", "shape": [4, 4], "offset": 0, "length": 64}
WEIGHTS_DIRECTED = [
    ("deep-index", b"[" * 20000 + b"]" * 20000),
    ("nested-shape", json.dumps([{**_GOOD, "shape": [[[[4]]]]}]).encode()),
    ("shape-infinity", json.dumps([_GOOD]).encode().replace(b"[4, 4]", b"[Infinity, 4]")),
    ("shape-1e999", json.dumps([_GOOD]).encode().replace(b"[4, 4]", b"[1e999, 4]")),
    ("shape-huge", json.dumps([{**_GOOD, "shape": [10 ** 30, 10 ** 30]}]).encode()),
    ("shape-bigint", json.dumps([_GOOD]).encode().replace(b"[4, 4]", b"[" + b"9" * 5000 + b", 4]")),
    ("shape-string", json.dumps([{**_GOOD, "shape": "44"}]).encode()),
    ("shape-bool", json.dumps([{**_GOOD, "shape": [True, 64]}]).encode()),
    ("shape-float", json.dumps([{**_GOOD, "shape": [4.0, 4]}]).encode()),
    ("offset-bool", json.dumps([{**_GOOD, "offset": False}]).encode()),
    ("dtype-object", json.dumps([{**_GOOD, "dtype": "object"}]).encode()),
    ("extra-key", json.dumps([{**_GOOD, "zz": 1}]).encode()),
    ("duplicate-name", json.dumps([_GOOD, {**_GOOD, "offset": 64}]).encode()),
    ("duplicate-key", json.dumps([_GOOD]).encode().replace(b'"name": "w"', b'"name": "w", "name": "v"')),
    ("length-past-data", json.dumps([{**_GOOD, "shape": [4, 400], "length": 6400}]).encode()),
    ("not-a-list", json.dumps(_GOOD).encode()),
    ("not-utf8", b"\xff\xfe[]"),
]


@pytest.mark.parametrize("text", [t for _, t in WEIGHTS_DIRECTED], ids=[n for n, _ in WEIGHTS_DIRECTED])
def test_reported_malformed_weights_indexes_are_weights_invalid(text: bytes) -> None:
    from edgemed_runtime.bundle.weights import unpack_weights
    from edgemed_runtime.errors import IntegrityError

    (name, arr), = unpack_weights(_weights_blob(json.dumps([_GOOD]).encode()))
    assert name == "w" and arr.shape == (4, 4)
    with pytest.raises(IntegrityError) as ei:
        unpack_weights(_weights_blob(text))
    assert ei.value.code == "weights-invalid" and ei.value.fix


def test_weights_index_length_beyond_the_payload_is_weights_invalid() -> None:
    from edgemed_runtime.bundle.weights import unpack_weights
    from edgemed_runtime.errors import IntegrityError

    blob = _weights_blob(json.dumps([_GOOD]).encode())
    blob[12:16] = struct.pack(">I", 2 ** 32 - 1)
    with pytest.raises(IntegrityError) as ei:
        unpack_weights(blob)
    assert ei.value.code == "weights-invalid"
