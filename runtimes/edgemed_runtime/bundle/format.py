"""The bundle format: names, limits, path rules and the parsed ``bundle.json`` (see
docs/bundle-format.md). Pure Python; no crypto here.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Mapping

from ..errors import BundleError, IntegrityError, InvalidInputError

FORMAT_VERSION = 1
MANIFEST_FILE = "bundle.json"
SIGNATURE_FILE = "model.sig"
KEYS_DIR = "keys"
PAYLOAD_DIR = "payload"
ARCHIVE_SUFFIX = ".edgemed"
MANIFEST_KIND = "edgemed-bundle"
WRAPPED_KEY_KIND = "edgemed-wrapped-key"
STREAM_SCHEME = "edgemed-stream-v1"

# Size limits, checked before anything is parsed or allocated.
MAX_MANIFEST_BYTES = 1 << 20  # bundle.json
MAX_SIGNATURE_BYTES = 1 << 20  # model.sig
MAX_KEY_FILE_BYTES = 64 << 10  # one keys/*.json
MAX_KEY_FILES = 4096
MAX_PAYLOAD_BYTES = 8 << 30  # one payload's declared plaintext length
MAX_FILES = 64  # signed files (bundle.json + payloads)
MIN_CHUNK, MAX_CHUNK = 4 << 10, 16 << 20
DEFAULT_CHUNK = 1 << 20
# Payload compression (applied before encryption; docs/bundle-format.md "Compression").
COMPRESSIONS = ("none", "zlib")
# bundle.json schema limits (docs/bundle-format.md "bundle.json"), checked before any field is used.
MAX_JSON_DEPTH = 16  # nesting of objects / lists
MAX_STRING = 4096  # characters of any string
MAX_ITEMS = 1 << 16  # entries of any list or object
MAX_DIM = (1 << 31) - 1  # one tensor dimension
MAX_INPUT_ELEMENTS = 1 << 28  # io.input_shape product (1 GiB as float32; a 512^3 CT is 2^27)
MAX_IMAGE_SIDE = 1 << 15  # preprocess.size per side
MAX_NUMBER = 1e300  # |any number|
# A bundle ``created`` later than the device's clock plus this is refused (not-yet-valid).
CLOCK_SKEW = timedelta(days=1)

# OMS: the reference verifier ignores these paths; keys/ is added after signing.
OMS_IGNORE_PATHS = (".git", ".gitattributes", ".github", ".gitignore", KEYS_DIR, SIGNATURE_FILE)

_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_FAMILY = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


def check_relpath(path: str, *, what: str = "path") -> str:
    """Return ``path`` if it is a safe relative POSIX path inside a bundle.

    Rules: 1-3 segments separated by ``/``; each segment matches ``[A-Za-z0-9][A-Za-z0-9._-]*``
    (so no ``..``, no leading dot, no absolute path, no backslash, no NUL, no drive letter).

    Raises:
        IntegrityError(code="unsafe-path"): anything else.
    """
    bad = (
        not isinstance(path, str) or not path or len(path) > 255 or "\\" in path
        or "\x00" in path or path.startswith("/") or path.count("/") > 2
        or not all(_SEGMENT.match(s) and s not in (".", "..") for s in path.split("/"))
    )
    if bad:
        raise IntegrityError(
            f"unsafe {what} in bundle", expected="a relative path like payload/model.onnx.enc "
            "(letters, digits, . _ -; no '..', '/', '\\' or NUL at the start)",
            found=repr(path)[:200], fix="re-seal the bundle with edgemed bundle",
            code="unsafe-path",
        )
    return path


def check_family(name: str) -> str:
    """Return ``name`` if it is a valid model family name, else raise BundleError."""
    if not isinstance(name, str) or not _FAMILY.match(name):
        raise BundleError(
            "invalid model family name", expected="lowercase letters, digits, . _ - (max 64)",
            found=repr(name)[:100], fix="pick a family like chest-xray", code="bad-family",
        )
    return name


def parse_time(value: str, *, what: str) -> datetime:
    """Parse an RFC 3339 UTC timestamp ``YYYY-MM-DDTHH:MM:SSZ``."""
    try:
        if not isinstance(value, str) or not value.endswith("Z"):
            raise ValueError(value)
        return datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    except ValueError:
        raise IntegrityError(
            f"bad {what} timestamp in bundle.json", expected="YYYY-MM-DDTHH:MM:SSZ",
            found=repr(value)[:80], code="manifest-invalid",
        ) from None


def format_time(t: datetime) -> str:
    """Format a datetime as ``YYYY-MM-DDTHH:MM:SSZ`` (UTC)."""
    return t.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_version(v: str) -> tuple[int, ...]:
    """``"1.2.3"`` -> ``(1, 2, 3)``; non-numeric suffixes are dropped (``"0.1.0rc1"`` -> 0.1.0)."""
    out = []
    for part in str(v).split(".")[:3]:
        m = re.match(r"\d+", part)
        out.append(int(m.group()) if m else 0)
    return tuple(out)


def canonical_json(obj: Any) -> bytes:
    """Serialise ``obj`` the way edgemed writes its JSON files (sorted keys, 2-space indent)."""
    return (json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=True) + "\n").encode()


@dataclass(frozen=True)
class PayloadEntry:
    """One encrypted file.

    Attributes:
        path: its path in the bundle (``payload/<name>.enc``).
        name: the plaintext file name it decrypts to (only in memory).
        role: ``"model"`` (the file the backend loads), ``"weights"`` (the model's large
            tensors, see weights.py; onnxruntime only) or ``"extra"``.
        plaintext_length: bytes under encryption, i.e. after decryption (the *stored* bytes:
            the compressed stream when ``compression`` is not ``"none"``); bound by the AAD.
        chunk_size: plaintext bytes per chunk (the last chunk may be shorter or empty).
        ciphertext_length: exact size of the encrypted file.
        compression: ``"none"`` (absent in bundle.json: same) or ``"zlib"`` (RFC 1950 stream,
            decompressed after decryption).
        uncompressed_length: with compression, the exact size after decompression (signed;
            a device refuses any other size); None without compression.
    """

    path: str
    name: str
    role: str
    plaintext_length: int
    chunk_size: int
    compression: str = "none"
    uncompressed_length: int | None = None

    def __post_init__(self) -> None:
        if self.compression not in COMPRESSIONS or \
                (self.compression == "none") != (self.uncompressed_length is None):
            raise IntegrityError("payload compression fields are inconsistent",
                                 expected="compression none without uncompressed_length, or "
                                 "zlib with it",
                                 found=f"{self.compression!r}, {self.uncompressed_length!r}",
                                 code="manifest-invalid")

    @property
    def size(self) -> int:
        """Bytes the payload finally decodes to (after decryption and decompression)."""
        return self.plaintext_length if self.uncompressed_length is None else self.uncompressed_length

    @property
    def chunks(self) -> int:
        """Number of chunks (at least one: an empty file is one empty final chunk)."""
        return max(1, -(-self.plaintext_length // self.chunk_size))

    @property
    def ciphertext_length(self) -> int:
        return self.plaintext_length + 16 * self.chunks

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"path": self.path, "name": self.name, "role": self.role,
                             "plaintext_length": self.plaintext_length,
                             "chunk_size": self.chunk_size,
                             "ciphertext_length": self.ciphertext_length,
                             "compression": self.compression}
        if self.uncompressed_length is not None:
            d["uncompressed_length"] = self.uncompressed_length
        return d


@dataclass(frozen=True)
class BundleManifest:
    """``bundle.json``, parsed and checked. ``raw`` is the full JSON object (for inspect/diff)."""

    bundle_id: str
    family: str
    release: int
    version: str
    created: str
    expires: str
    min_runtime_version: str
    target: Mapping[str, Any]
    backend: str
    backend_options: Mapping[str, Any]
    artifact_format: str
    hardware_ids: tuple[str, ...]
    key_commitment: str
    payloads: tuple[PayloadEntry, ...]
    raw: Mapping[str, Any] = field(compare=False, repr=False)
    io: Any = field(default=None, compare=False, repr=False)  # IOSpec of ``raw["io"]``
    preprocess: Any = field(default=None, compare=False, repr=False)  # its PreprocessSpec

    @property
    def created_at(self) -> datetime:
        return parse_time(self.created, what="created")

    @property
    def bundle_id_bytes(self) -> bytes:
        return bytes.fromhex(self.bundle_id)

    @property
    def model_payload(self) -> PayloadEntry:
        return next(p for p in self.payloads if p.role == "model")

    @property
    def weights_payload(self) -> PayloadEntry | None:
        return next((p for p in self.payloads if p.role == "weights"), None)

    @property
    def expires_at(self) -> datetime:
        return parse_time(self.expires, what="expires")


_RESEAL = "the publisher signed a malformed bundle.json: re-seal it with edgemed bundle"


def _bad(msg: str, found: Any, expected: str | None = None) -> IntegrityError:
    return IntegrityError(
        f"bundle.json is invalid: {msg}", expected=expected, found=_show(found),
        fix=_RESEAL, code="manifest-invalid",
    )


def _show(v: Any) -> str:
    """A short ``repr`` for error messages (bundle.json holds no patient data)."""
    if isinstance(v, (dict, list)) and len(v) > 8:
        return f"{type(v).__name__} of {len(v)} entries"
    r = repr(v)
    return r if len(r) <= 80 else r[:77] + "..."


# -- strict JSON ---------------------------------------------------------------------------------
def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    v = float(text)
    if not math.isfinite(v) or abs(v) > MAX_NUMBER:
        raise ValueError(f"number {text[:40]} is out of range")
    return v


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    d = dict(pairs)
    if len(d) != len(pairs):
        seen: set[str] = set()
        for k, _ in pairs:
            if k in seen:
                raise ValueError(f"key {k[:64]!r} is given twice")
            seen.add(k)
    return d


def load_json(data: bytes | bytearray | memoryview, *, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """Parse strict JSON: UTF-8, no NaN / Infinity, finite floats of magnitude <= 1e300,
    integers of <= 4300 digits, no key given twice, nesting <= ``max_depth``.

    Raises:
        ValueError: with a short reason (callers map it to their error code).
    """
    try:
        doc = json.loads(bytes(data).decode("utf-8"), parse_constant=_no_constants,
                         parse_float=_finite_float, object_pairs_hook=_unique_keys)
    except UnicodeDecodeError:
        raise ValueError("not UTF-8") from None
    except RecursionError:
        raise ValueError(f"nested deeper than {max_depth}") from None
    except ValueError as exc:  # JSONDecodeError, our hooks, too many digits
        raise ValueError(str(exc)[:120]) from None
    stack = [(doc, 1)]
    while stack:
        v, depth = stack.pop()
        if isinstance(v, (dict, list)):
            if depth > max_depth:
                raise ValueError(f"nested deeper than {max_depth}")
            stack.extend((c, depth + 1) for c in (v.values() if isinstance(v, dict) else v))
    return doc


# -- schema: each check takes (value, path) and raises manifest-invalid naming the path -----------
Check = Callable[[Any, str], None]


def _fail(path: str, expected: str, value: Any) -> IntegrityError:
    return _bad(f"{path} must be {expected}", value, expected=expected)


def _str(max_len: int = 256, pattern: re.Pattern[str] | None = None, *, empty: bool = False) -> Check:
    want = f"a string of {0 if empty else 1}..{max_len} characters" + (
        f" matching {pattern.pattern}" if pattern is not None else "")

    def check(v: Any, path: str) -> None:
        if type(v) is not str or len(v) > max_len or (not v and not empty) or (
                pattern is not None and not pattern.match(v)):
            raise _fail(path, want, v)
    return check


def _int(lo: int, hi: int) -> Check:
    def check(v: Any, path: str) -> None:
        if type(v) is not int or not lo <= v <= hi:
            raise _fail(path, f"an integer in [{lo}, {hi}]", v)
    return check


def _num(*, positive: bool = False) -> Check:
    def check(v: Any, path: str) -> None:
        ok = type(v) in (int, float) and -MAX_NUMBER <= v <= MAX_NUMBER and (not positive or v > 0)
        if not ok:
            raise _fail(path, "a finite number" + (" > 0" if positive else ""), v)
    return check


def _bool(v: Any, path: str) -> None:
    if type(v) is not bool:
        raise _fail(path, "true or false", v)


def _enum(*values: Any) -> Check:
    def check(v: Any, path: str) -> None:
        if not any(type(v) is type(x) and v == x for x in values):
            raise _fail(path, "one of " + ", ".join(json.dumps(x) for x in values), v)
    return check


def _nullable(inner: Check) -> Check:
    def check(v: Any, path: str) -> None:
        if v is not None:
            inner(v, path)
    return check


def _list(item: Check, lo: int = 0, hi: int = MAX_ITEMS) -> Check:
    def check(v: Any, path: str) -> None:
        if type(v) is not list or not lo <= len(v) <= hi:
            raise _fail(path, f"a list of {lo}..{hi} entries", v)
        for i, x in enumerate(v):
            item(x, f"{path}[{i}]")
    return check


def _pair(item: Check, max_product: int | None = None) -> Check:
    pair = _list(item, 2, 2)

    def check(v: Any, path: str) -> None:
        pair(v, path)
        if max_product is not None and v[0] * v[1] > max_product:
            raise _fail(path, f"two values whose product is <= {max_product}", v)
    return check


def _any_of(*checks: Check, expected: str) -> Check:
    def check(v: Any, path: str) -> None:
        for c in checks:
            try:
                c(v, path)
                return
            except IntegrityError:
                pass
        raise _fail(path, expected, v)
    return check


def _free(v: Any, path: str) -> None:
    """Free-form JSON (metrics, provenance, producer): bounded strings, lists and objects,
    finite numbers (depth is bounded by ``load_json``)."""
    stack = [(v, path)]
    while stack:
        x, p = stack.pop()
        if type(x) is str:
            if len(x) > MAX_STRING:
                raise _fail(p, f"a string of <= {MAX_STRING} characters", x)
        elif type(x) is int:
            if abs(x) >= 1 << 63:
                raise _fail(p, "an integer of magnitude < 2^63", x)
        elif isinstance(x, (dict, list)):
            if len(x) > MAX_ITEMS:
                raise _fail(p, f"at most {MAX_ITEMS} entries", x)
            if isinstance(x, dict):
                for k, c in x.items():
                    if len(k) > 256:
                        raise _fail(p, "keys of <= 256 characters", k)
                    stack.append((c, f"{p}.{k[:32]}"))
            else:
                stack.extend((c, f"{p}[{i}]") for i, c in enumerate(x))
        # floats are finite (load_json), bool and None need nothing


def _obj(fields: Mapping[str, tuple[Check, bool]], *, extra: Check | None = None,
         max_keys: int = 256) -> Check:
    """An object with ``fields`` (name -> (check, required)); other keys are refused unless
    ``extra`` checks their values."""
    def check(v: Any, path: str) -> None:
        if type(v) is not dict or len(v) > max_keys:
            raise _fail(path, f"an object of <= {max_keys} fields", v)
        for name, (c, required) in fields.items():
            if name in v:
                c(v[name], f"{path}.{name}" if path else name)
            elif required:
                raise _fail(f"{path}.{name}" if path else name, "present", "missing")
        for k in v:
            if k not in fields:
                p = f"{path}.{k[:32]}" if path else k[:32]
                if extra is None:
                    raise IntegrityError(
                        f"bundle.json is invalid: unknown field {p}",
                        expected=("fields " + ", ".join(fields))[:200], found=_show(k),
                        fix="upgrade edgemed_runtime if a newer edgemed sealed it, else re-seal "
                        "the bundle with edgemed bundle", code="manifest-invalid")
                if len(k) > 64:
                    raise _fail(p, "a field name of <= 64 characters", k)
                extra(v[k], p)
    return check


def _shape(v: Any, path: str) -> None:
    _list(_int(1, MAX_DIM), 2, 8)(v, path)
    if math.prod(v) > MAX_INPUT_ELEMENTS:
        raise _fail(path, f"a shape of <= {MAX_INPUT_ELEMENTS} elements", v)


_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
_VERSION = re.compile(r"^[0-9][0-9A-Za-z.+-]*$")
_HEX32, _HEX64 = re.compile(r"^[0-9a-f]{32}$"), re.compile(r"^[0-9a-f]{64}$")
_SCALAR = _any_of(_str(256, empty=True), _num(), _bool, expected="a string, number or boolean")
_DEVICE_SIDE = ("extra_files", "engine_cache_dir", "engine_cache_key")

IO_SCHEMA = _obj({
    "input_name": (_str(256), True),
    "input_shape": (_shape, True),
    "input_dtype": (_enum("float32", "float16", "uint8", "int8"), False),
    "output_names": (_list(_str(256), 1, 256), False),
    "dynamic_batch": (_bool, False),
    "labels": (_list(_str(1024, empty=True)), False),
    "dynamic_spatial": (_bool, False),
})
IMAGE_PREPROCESS_SCHEMA = _obj({
    "window": (_nullable(_pair(_num())), False),
    "size": (_nullable(_pair(_int(1, MAX_IMAGE_SIDE), MAX_INPUT_ELEMENTS)), False),
    "mean": (_num(), False),
    "std": (_num(positive=True), False),
    "channels": (_enum(1, 3), False),
    "layout": (_enum("CHW", "HWC"), False),
    "dtype": (_enum("float32", "float16"), False),
    "frame": (_int(-MAX_DIM, MAX_DIM), False),
    "version": (_int(1, 1 << 16), False),
    "spacing": (_nullable(_pair(_num(positive=True))), False),
    "frames": (_enum("pick", "stack"), False),
    "reduce": (_enum("auto", "off"), False),
})
_TRIPLE = _list(_num(positive=True), 3, 3)
VOLUME_PREPROCESS_SCHEMA = _obj({
    "kind": (_enum("volume"), True),
    "axcodes": (_nullable(_str(3)), False),
    "spacing": (_nullable(_TRIPLE), False),
    "intensity": (_nullable(_list(_num(), 4, 4)), False),
    "clip": (_bool, False),
    "size": (_nullable(_list(_int(1, MAX_IMAGE_SIDE), 3, 3)), False),
    "pad_value": (_nullable(_num()), False),
    "channels": (_int(1, 64), False),
    "dtype": (_enum("float32", "float16"), False),
    "interpolation": (_enum("linear", "nearest"), False),
    "version": (_int(1, 1 << 16), False),
})
PREPROCESS_SCHEMA = _any_of(IMAGE_PREPROCESS_SCHEMA, VOLUME_PREPROCESS_SCHEMA,
                            expected="a 2D PreprocessSpec or a VolumeSpec (\"kind\": \"volume\")")
TASK_SCHEMA = _obj({
    "name": (_enum("classification", "multilabel", "segmentation"), True),
    "activation": (_enum("softmax", "sigmoid"), False),
    "thresholds": (_list(_num(), 0, 1024), False),
})
INFERENCE_SCHEMA = _obj({
    "mode": (_enum("whole", "sliding_window"), True),
    "roi_size": (_list(_int(1, MAX_IMAGE_SIDE), 0, 3), False),
    "overlap": (_num(), False), "blend": (_enum("constant", "gaussian"), False),
    "sigma_scale": (_num(positive=True), False), "sw_batch_size": (_int(1, 1024), False),
    "padding_mode": (_str(16), False), "cval": (_num(), False),
    "version": (_int(1, 1 << 16), False),
})
_COUNT = _int(0, 1024)
BACKEND_OPTIONS_SCHEMA = _obj({
    "threads": (_COUNT, False), "inter_threads": (_COUNT, False),
    "num_streams": (_COUNT, False), "static_batch": (_int(0, 1 << 16), False),
    "device": (_any_of(_int(0, 1024), _str(64), expected="a device index or name"), False),
    "providers": (_list(_str(64), 1, 16), False),
    "saved_runtime_optimizations": (_bool, False),
    "recipe": (_obj({}, extra=_SCALAR, max_keys=32), False),
    "graph_optimization": (_enum("disable", "basic", "extended", "all"), False),
    **{k: (_str(64), False) for k in ("precision", "performance_hint", "nnapi_flags",
                                      "coreml_format", "coreml_compute_units")},
}, extra=_SCALAR, max_keys=64)
PAYLOAD_SCHEMA = _obj({
    "path": (_str(255), True), "name": (_str(128), True), "role": (_str(16), True),
    "plaintext_length": (_int(0, 1 << 62), True), "chunk_size": (_int(0, 1 << 62), True),
    "ciphertext_length": (_int(0, 1 << 62), True), "compression": (_str(32), False),
    "uncompressed_length": (_int(0, 1 << 62), False),
})
REQUIRES_SCHEMA = _obj({
    "backend": (_str(64, _NAME), True),
    "extras": (_list(_str(64, _NAME), 0, 16), True),
    "packages": (_obj({}, extra=_str(32, _VERSION), max_keys=16), True),
})
"""``requires`` (optional; absent in bundles sealed before it): what the device must install
(edgemed_runtime.bundle.requirements)."""
MANIFEST_SCHEMA = _obj({
    "kind": (_str(64), True), "format_version": (_int(0, 1 << 31), True),
    "bundle_id": (_str(32, _HEX32), True), "family": (_str(64, _FAMILY), True),
    "release": (_int(1, (1 << 63) - 1), True), "version": (_str(64), True),
    "created": (_str(32), True), "expires": (_str(32), True),
    "min_runtime_version": (_str(32, _VERSION), True),
    "target": (_obj({"name": (_str(64), False), "hash": (_str(128), False)}, extra=_SCALAR,
                    max_keys=32), False),
    "backend": (_str(64, _NAME), True), "backend_options": (BACKEND_OPTIONS_SCHEMA, False),
    "format": (_str(32, _NAME), True), "hardware_ids": (_list(_str(128), 0, 4096), False),
    "io": (IO_SCHEMA, True), "preprocess": (PREPROCESS_SCHEMA, True),
    "labels": (_list(_str(1024, empty=True)), False),
    "metrics": (_free, False), "provenance": (_free, False), "producer": (_free, False),
    "requires": (REQUIRES_SCHEMA, False),
    "task": (TASK_SCHEMA, False), "inference": (_nullable(INFERENCE_SCHEMA), False),
    "encryption": (_obj({
        "scheme": (_str(64), True), "aead": (_enum("AES-256-GCM"), False),
        "kdf": (_enum("HKDF-SHA256"), False), "key_commitment": (_str(64, _HEX64), True),
    }), True),
    "payloads": (_list(PAYLOAD_SCHEMA, 1, MAX_FILES - 1), True),
})


def _int_field(d: Mapping[str, Any], key: str, lo: int, hi: int) -> int:
    v = d.get(key)
    if type(v) is not int or not lo <= v <= hi:
        raise _bad(f"{key} must be an integer in [{lo}, {hi}]", v)
    return v


def parse_manifest(data: bytes) -> BundleManifest:
    """Parse and check ``bundle.json`` bytes (its signature was verified before).

    Every field is checked against the schema above (exact types, bounded strings, lists,
    numbers and shapes, no unknown fields, no key twice, nesting <= MAX_JSON_DEPTH) before any
    is used, so a publisher-signed but malformed manifest raises a typed error, never a raw one.

    Raises:
        IntegrityError: oversized, not strict JSON, wrong kind, missing/invalid/unknown fields,
            unsafe paths (codes ``oversized``, ``manifest-invalid``, ``unsafe-path``,
            ``length-mismatch``).
        BundleError: ``format-version`` (a format this runtime does not read),
            ``unsupported-compression`` (a newer codec).
    """
    if len(data) > MAX_MANIFEST_BYTES:
        raise IntegrityError("bundle.json is too large", expected=f"<= {MAX_MANIFEST_BYTES} bytes",
                             found=f"{len(data)} bytes", code="oversized")
    try:
        d = load_json(data)
    except ValueError as exc:
        raise _bad("not strict JSON", str(exc), expected="UTF-8 JSON, finite numbers, no key "
                   f"twice, nesting <= {MAX_JSON_DEPTH}") from None
    if not isinstance(d, dict) or d.get("kind") != MANIFEST_KIND:
        raise _bad("not an edgemed bundle manifest", d.get("kind") if isinstance(d, dict) else d,
                   expected=f'"kind": "{MANIFEST_KIND}"')
    fv = d.get("format_version")
    if type(fv) is not int or fv != FORMAT_VERSION:
        raise BundleError(
            "unsupported bundle format version", expected=str(FORMAT_VERSION), found=_show(fv),
            fix="upgrade edgemed_runtime, or re-seal with a matching edgemed", code="format-version",
        )
    MANIFEST_SCHEMA(d, "")
    enc = d["encryption"]
    if enc["scheme"] != STREAM_SCHEME:
        raise _bad("unknown encryption scheme", enc["scheme"], expected=STREAM_SCHEME)
    payloads = [_payload(p) for p in d["payloads"]]
    if sum(p.role == "model" for p in payloads) != 1 or sum(p.role == "weights" for p in payloads) > 1:
        raise _bad("exactly one 'model' payload and at most one 'weights' payload allowed",
                   [p.role for p in payloads])
    if len({p.path for p in payloads}) != len(payloads) or len({p.name for p in payloads}) != len(payloads):
        raise _bad("payload paths and names must be unique", [p.path for p in payloads])
    io, pre = _specs(d["io"], d["preprocess"])
    m = BundleManifest(
        bundle_id=d["bundle_id"], family=d["family"], release=d["release"], version=d["version"],
        created=d["created"], expires=d["expires"], min_runtime_version=d["min_runtime_version"],
        target=d.get("target", {}), backend=d["backend"], backend_options=d.get("backend_options", {}),
        artifact_format=d["format"], hardware_ids=tuple(d.get("hardware_ids", [])),
        key_commitment=enc["key_commitment"], payloads=tuple(payloads), raw=d, io=io,
        preprocess=pre,
    )
    for key in _DEVICE_SIDE:
        if key in m.backend_options:
            raise _bad(f"backend_options.{key} is a device-side option", key,
                       expected="no " + ", ".join(_DEVICE_SIDE))
    m.created_at  # noqa: B018 - validates the timestamps
    m.expires_at  # noqa: B018
    return m


def _payload(p: Mapping[str, Any]) -> PayloadEntry:
    """One schema-checked ``payloads`` entry -> PayloadEntry (path rules, codec, lengths)."""
    path = check_relpath(p["path"], what="payload path")
    if not path.startswith(PAYLOAD_DIR + "/"):
        raise IntegrityError("payload outside payload/", expected=f"{PAYLOAD_DIR}/<name>.enc",
                             found=path, fix=_RESEAL, code="unsafe-path")
    codec = p.get("compression", "none")  # absent: a bundle sealed before compression
    if codec not in COMPRESSIONS:
        raise BundleError(
            "payload uses a compression this runtime does not read",
            expected=" or ".join(COMPRESSIONS), found=repr(codec)[:64],
            fix="upgrade edgemed_runtime, or re-seal with --compression none",
            code="unsupported-compression",
        )
    if codec == "none":
        if "uncompressed_length" in p:
            raise _bad("uncompressed_length given for an uncompressed payload",
                       p["uncompressed_length"])
        ulen = None
    else:
        ulen = _int_field(p, "uncompressed_length", 0, MAX_PAYLOAD_BYTES)
    if p["role"] not in ("model", "weights", "extra"):
        raise _bad("payload role must be model, weights or extra", p["role"])
    entry = PayloadEntry(
        path=path, name=check_relpath(p["name"], what="payload name"), role=p["role"],
        plaintext_length=_int_field(p, "plaintext_length", 0, MAX_PAYLOAD_BYTES),
        chunk_size=_int_field(p, "chunk_size", MIN_CHUNK, MAX_CHUNK), compression=codec,
        uncompressed_length=ulen,
    )
    if p["ciphertext_length"] != entry.ciphertext_length:
        raise IntegrityError(
            "declared ciphertext length does not match the plaintext length",
            expected=str(entry.ciphertext_length), found=repr(p["ciphertext_length"]),
            fix=_RESEAL, code="length-mismatch",
        )
    return entry


def task_and_inference(raw: Mapping[str, Any]) -> tuple[Any, Any]:
    """The schema-checked ``task`` / ``inference`` of a manifest as (TaskSpec, InferenceSpec or
    None); absent: classification, whole input (bundles sealed before tasks existed).

    Raises:
        IntegrityError: ``manifest-invalid``.
    """
    from ..inference import InferenceSpec
    from ..tasks import TaskSpec

    try:
        inf = raw.get("inference")
        return TaskSpec.from_dict(raw.get("task")), (
            InferenceSpec.from_dict(inf) if inf is not None else None)
    except InvalidInputError as exc:
        raise IntegrityError(f"bundle.json task/inference is invalid: {exc.message}",
                             expected=exc.expected, found=exc.found, fix=exc.fix or _RESEAL,
                             code="manifest-invalid") from None


def _specs(io: Mapping[str, Any], pre: Mapping[str, Any]) -> tuple[Any, Any]:
    """The schema-checked ``io`` / ``preprocess`` objects as IOSpec / PreprocessSpec."""
    from ..iospec import IOSpec
    from ..specs import spec_from_dict

    try:
        return IOSpec.from_dict(io), spec_from_dict(pre)
    except InvalidInputError as exc:
        raise IntegrityError(f"bundle.json io/preprocess is invalid: {exc.message}",
                             expected=exc.expected, found=exc.found,
                             fix=exc.fix or _RESEAL, code="manifest-invalid") from None
    except (KeyError, TypeError, ValueError, IndexError, OverflowError) as exc:
        raise _bad("io/preprocess cannot be read", f"{type(exc).__name__}: {exc}") from None
