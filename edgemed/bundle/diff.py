"""What changed between two bundles: fields, passes, pass configs, metrics and hashes (from
their ``bundle.json`` and signed file digests, without decrypting anything)."""

from __future__ import annotations

from typing import Any, Mapping

FIELDS = ("family", "release", "version", "backend", "format", "backend_options", "target",
          "hardware_ids", "expires", "min_runtime_version", "io", "preprocess", "labels")


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, Mapping):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: d}


def _changed(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, list[Any]]:
    return {k: [a.get(k), b.get(k)] for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


def _passes(manifest: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [r for r in manifest.get("provenance", []) if isinstance(r, Mapping)]


def _hashes(manifest: Mapping[str, Any], signed: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {"target": (manifest.get("target") or {}).get("hash")}
    for r in _passes(manifest):
        for k, v in _flatten(r).items():
            if "sha256" in k or k.endswith("hash"):
                out[f"{r.get('pass')}.{k}"] = v
    for path, digest in signed.items():
        out[f"file:{path}"] = digest
    return out


def diff_manifests(a: Mapping[str, Any], b: Mapping[str, Any], *,
                   signed_a: Mapping[str, str] | None = None,
                   signed_b: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Compare two bundle.json objects (plus optional ``{path: sha256}`` of their signed files).

    Returns ``{"a", "b", "fields", "passes", "configs", "metrics", "hashes"}``; each section
    lists only what differs (``[a_value, b_value]``), metrics with a numeric ``delta``.
    """
    fields = {k: [a.get(k), b.get(k)] for k in FIELDS if a.get(k) != b.get(k)}
    pa = [str(r.get("pass")) for r in _passes(a)]
    pb = [str(r.get("pass")) for r in _passes(b)]
    ra = {str(r.get("pass")): r for r in _passes(a)}
    rb = {str(r.get("pass")): r for r in _passes(b)}
    configs = {}
    for name in [n for n in pa if n in rb]:
        ca = _flatten({k: v for k, v in ra[name].items() if k not in ("seconds",)})
        cb = _flatten({k: v for k, v in rb[name].items() if k not in ("seconds",)})
        ch = _changed(ca, cb)
        if ch:
            configs[name] = ch
    ma, mb = _flatten(a.get("metrics", {})), _flatten(b.get("metrics", {}))
    metrics = {}
    for k, (va, vb) in _changed(ma, mb).items():
        entry: dict[str, Any] = {"a": va, "b": vb}
        if isinstance(va, (int, float)) and isinstance(vb, (int, float)) \
                and not isinstance(va, bool) and not isinstance(vb, bool):
            entry["delta"] = vb - va
        metrics[k] = entry
    hashes = _changed(_hashes(a, signed_a or {}), _hashes(b, signed_b or {}))
    return {
        "a": {"bundle_id": a.get("bundle_id"), "release": a.get("release"), "version": a.get("version")},
        "b": {"bundle_id": b.get("bundle_id"), "release": b.get("release"), "version": b.get("version")},
        "fields": fields,
        "passes": {"a": pa, "b": pb, "added": [n for n in pb if n not in ra],
                   "removed": [n for n in pa if n not in rb]},
        "configs": configs,
        "metrics": metrics,
        "hashes": hashes,
    }
