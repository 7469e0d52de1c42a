"""The node's configuration: ``node.toml`` read strictly into frozen dataclasses.

Every table and key is checked: an unknown key, a wrong type or a value out of range raises
``InvalidInputError(code="bad-node-config")`` naming the key. Relative paths are resolved
against the folder of the TOML file. See docs/node.md for every key.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

from ..dicom.series_filter import SeriesFilter
from ..errors import InvalidInputError
from .selection import series_filter

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - the node extra installs tomli on Python 3.10
    import tomli as tomllib


@dataclass(frozen=True)
class TlsConfig:
    """Server certificate and key; ``ca``: the CA that client certificates must chain to."""

    cert: Path
    key: Path
    ca: Path


@dataclass(frozen=True)
class ScpConfig:
    """The Storage SCP: AE title, address, allow-list (empty: any caller), SOP classes and
    transfer syntaxes (empty: the defaults of ``scp.py``), optional TLS."""

    ae_title: str = "EDGEMED"
    host: str = "127.0.0.1"
    port: int = 11112
    allowed_calling_aes: tuple[str, ...] = ()
    sop_classes: tuple[str, ...] = ()
    transfer_syntaxes: tuple[str, ...] = ()
    tls: TlsConfig | None = None


@dataclass(frozen=True)
class ModelConfig:
    """The bundle: the installed one of ``family`` in ``store`` (hot-swapped), or a fixed
    ``bundle`` path; the keys to verify and decrypt it."""

    trust: Path
    device_key: Path
    state_dir: Path
    store: Path | None = None
    family: str | None = None
    bundle: Path | None = None
    passphrase_env: str | None = None
    threads: int | None = None


@dataclass(frozen=True)
class OutTlsConfig:
    """TLS to the destination: ``ca`` verifies its certificate; ``cert`` / ``key``: the node's
    client certificate, when the destination asks for one."""

    ca: Path
    cert: Path | None = None
    key: Path | None = None


SEND_BY = ("c-store", "stow-rs")


@dataclass(frozen=True)
class DestinationConfig:
    """Where results go (C-STORE and / or DICOMweb STOW-RS), how often to retry, the
    dead-letter folder and its automatic redelivery (``redeliver_s`` = 0: only on request)."""

    dead_letter: Path
    ae_title: str = ""
    host: str = ""
    port: int = 0
    retries: int = 5
    backoff_s: float = 1.0
    timeout_s: float = 30.0
    send_by: tuple[str, ...] = ("c-store",)
    stow_url: str = ""
    stow_ca: Path | None = None
    tls: OutTlsConfig | None = None
    redeliver_s: float = 0.0


@dataclass(frozen=True)
class SpoolConfig:
    """The encrypted spool: folder, key file (created 0600 on first start), the byte budget
    and the scratch folder (tmpfs) where one series is decrypted for the time of inference."""

    dir: Path
    key_file: Path
    max_bytes: int = 1 << 30
    scratch_dir: Path = Path("/dev/shm")
    journal_max_bytes: int = 16 << 20


@dataclass(frozen=True)
class NodeConfig:
    """The whole ``node.toml``."""

    scp: ScpConfig
    model: ModelConfig
    destination: DestinationConfig
    spool: SpoolConfig
    selection: SeriesFilter = field(default_factory=SeriesFilter)
    group_timeout_s: float = 10.0
    group_by: str = "series"
    group_on_association_end: bool = True
    late: str = "ack"
    late_window_s: float = 86400.0
    workers: int = 2
    queue_size: int = 64
    watchdog_s: float = 300.0
    drain_s: float = 30.0
    metrics_port: int = 0
    audit_log: Path | None = None


def _bad(key: str, expected: str, found: Any) -> InvalidInputError:
    return InvalidInputError(f"node configuration key {key!r} is invalid", expected=expected,
                             found=type(found).__name__ if not isinstance(found, (int, float))
                             else str(found), fix="edit node.toml (see docs/node.md)", code="bad-node-config")


def _table(d: Mapping[str, Any], key: str, required: bool = True) -> dict[str, Any]:
    v = d.get(key)
    if v is None and not required:
        return {}
    if not isinstance(v, dict):
        raise _bad(key, "a table", v)
    return v


class _Reader:
    """Reads one table's keys, typed, and refuses the keys it was not asked for."""

    def __init__(self, table: Mapping[str, Any], prefix: str, base: Path) -> None:
        self.t, self.prefix, self.base, self.seen = table, prefix, base, set()

    def _get(self, key: str) -> Any:
        self.seen.add(key)
        return self.t.get(key)

    def str(self, key: str, default: Any = None, required: bool = False) -> Any:
        v = self._get(key)
        if v is None:
            if required:
                raise _bad(self.prefix + key, "a string (required)", v)
            return default
        if not isinstance(v, str) or not v:
            raise _bad(self.prefix + key, "a non-empty string", v)
        return v

    def path(self, key: str, default: Any = None, required: bool = False) -> Any:
        v = self.str(key, None, required)
        return default if v is None else (self.base / os.path.expanduser(v))

    def num(self, key: str, default: Any, *, lo: float, hi: float, integer: bool = True) -> Any:
        v = self._get(key)
        if v is None:
            return default
        ok = isinstance(v, int) if integer else isinstance(v, (int, float))
        if isinstance(v, bool) or not ok or not lo <= v <= hi:
            raise _bad(self.prefix + key, f"{'an integer' if integer else 'a number'} in "
                       f"{lo:g}..{hi:g}", v)
        return v

    def strs(self, key: str, default: Any = None) -> Any:
        v = self._get(key)
        if v is None:
            return default
        if not isinstance(v, list) or not all(isinstance(s, str) and s for s in v):
            raise _bad(self.prefix + key, "a list of non-empty strings", v)
        return tuple(v)

    def done(self) -> None:
        extra = sorted(set(self.t) - self.seen)
        if extra:
            raise InvalidInputError("unknown key in the node configuration", code="bad-node-config",
                                    expected="the keys of docs/node.md",
                                    found=", ".join(self.prefix + k for k in extra)[:200],
                                    fix="remove or rename the key")


def _ae(key: str, v: str) -> str:
    if not (1 <= len(v) <= 16) or not v.isascii() or "\\" in v or v != v.strip():
        raise _bad(key, "an AE title: 1-16 ASCII characters, no backslash", v)
    return v


def _flag(r: _Reader, key: str, default: bool) -> bool:
    v = r._get(key)
    if v is None:
        return default
    if not isinstance(v, bool):
        raise _bad(r.prefix + key, "true or false", v)
    return v


def _choice(r: _Reader, key: str, allowed: tuple[str, ...]) -> str:
    v = r.str(key, allowed[0])
    if v not in allowed:
        raise _bad(r.prefix + key, " or ".join(repr(a) for a in allowed), "another string")
    return str(v)


def _scp(t: dict[str, Any], base: Path) -> ScpConfig:
    r = _Reader(t, "node.", base)
    tls_t = _table(t, "tls", required=False)
    r.seen.add("tls")
    tls = None
    if tls_t:
        tr = _Reader(tls_t, "node.tls.", base)
        tls = TlsConfig(cert=tr.path("cert", required=True), key=tr.path("key", required=True),
                        ca=tr.path("ca", required=True))
        tr.done()
    cfg = ScpConfig(
        ae_title=_ae("node.ae_title", r.str("ae_title", "EDGEMED")),
        host=r.str("host", "127.0.0.1"), port=r.num("port", 11112, lo=0, hi=65535),
        allowed_calling_aes=tuple(_ae("node.allowed_calling_aes", a)
                                  for a in r.strs("allowed_calling_aes", ())),
        sop_classes=r.strs("sop_classes", ()), transfer_syntaxes=r.strs("transfer_syntaxes", ()),
        tls=tls)
    r.done()
    return cfg


def _model(t: dict[str, Any], base: Path) -> ModelConfig:
    r = _Reader(t, "model.", base)
    cfg = ModelConfig(
        trust=r.path("trust", required=True), device_key=r.path("device_key", required=True),
        state_dir=r.path("state_dir", required=True), store=r.path("store"),
        family=r.str("family"), bundle=r.path("bundle"), passphrase_env=r.str("passphrase_env"),
        threads=r.num("threads", None, lo=1, hi=256))
    r.done()
    installed = cfg.store is not None or cfg.family is not None
    if (cfg.bundle is not None and installed) or (cfg.bundle is None and (
            cfg.store is None or cfg.family is None)):
        raise InvalidInputError("the model section names no bundle, or two", code="bad-node-config",
                                expected="either store + family (installed, hot-swapped) or "
                                "bundle (a fixed path)",
                                found="both" if cfg.bundle is not None else "an incomplete one",
                                fix="edit [model] in node.toml")
    return cfg


def _out_tls(t: dict[str, Any], base: Path) -> OutTlsConfig | None:
    tls_t = _table(t, "tls", required=False)
    if not tls_t:
        return None
    r = _Reader(tls_t, "destination.tls.", base)
    cfg = OutTlsConfig(ca=r.path("ca", required=True), cert=r.path("cert"), key=r.path("key"))
    r.done()
    if (cfg.cert is None) != (cfg.key is None):
        raise _bad("destination.tls.key", "cert and key together (or neither)", "one of them")
    return cfg


def _destination(t: dict[str, Any], base: Path) -> DestinationConfig:
    r = _Reader(t, "destination.", base)
    r.seen.add("tls")
    send_by = r.strs("send_by", ("c-store",))
    if not send_by or any(v not in SEND_BY for v in send_by) or len(set(send_by)) < len(send_by):
        raise _bad("destination.send_by", 'a list of "c-store" and / or "stow-rs"', "list")
    dimse = "c-store" in send_by
    cfg = DestinationConfig(
        ae_title=_ae("destination.ae_title", r.str("ae_title", required=dimse) or "NONE"),
        host=r.str("host", "", required=dimse), port=r.num("port", 0, lo=1, hi=65535),
        dead_letter=r.path("dead_letter", required=True),
        retries=r.num("retries", 5, lo=0, hi=100),
        backoff_s=r.num("backoff_s", 1.0, lo=0, hi=3600, integer=False),
        timeout_s=r.num("timeout_s", 30.0, lo=0.1, hi=3600, integer=False),
        send_by=send_by, stow_url=r.str("stow_url", "", required="stow-rs" in send_by),
        stow_ca=r.path("stow_ca"), tls=_out_tls(t, base),
        redeliver_s=r.num("redeliver_s", 0.0, lo=0, hi=30 * 86400, integer=False))
    r.done()
    if dimse and not cfg.port:
        raise _bad("destination.port", "an integer in 1..65535 (required)", None)
    if cfg.stow_url and not cfg.stow_url.startswith(("http://", "https://")):
        raise _bad("destination.stow_url", "an http:// or https:// URL", "string")
    return cfg


def _spool(t: dict[str, Any], base: Path) -> SpoolConfig:
    r = _Reader(t, "spool.", base)
    cfg = SpoolConfig(dir=r.path("dir", required=True), key_file=r.path("key_file", required=True),
                      max_bytes=r.num("max_bytes", 1 << 30, lo=1 << 16, hi=1 << 50),
                      scratch_dir=r.path("scratch_dir", Path("/dev/shm")),
                      journal_max_bytes=r.num("journal_max_bytes", 16 << 20, lo=1 << 12,
                                              hi=1 << 40))
    r.done()
    return cfg


def parse_config(data: Mapping[str, Any], base: Path) -> NodeConfig:
    """Build a NodeConfig from a parsed TOML mapping (paths relative to ``base``).

    Raises:
        InvalidInputError: ``bad-node-config`` naming the key.
    """
    top = _Reader(data, "", base)
    for k in ("node", "model", "destination", "spool", "selection", "workers", "metrics",
              "audit", "grouping"):
        top.seen.add(k)
    top.done()
    w = _Reader(_table(data, "workers", False), "workers.", base)
    g = _Reader(_table(data, "grouping", False), "grouping.", base)
    m = _Reader(_table(data, "metrics", False), "metrics.", base)
    a = _Reader(_table(data, "audit", False), "audit.", base)
    cfg = NodeConfig(
        scp=_scp(_table(data, "node"), base), model=_model(_table(data, "model"), base),
        destination=_destination(_table(data, "destination"), base),
        spool=_spool(_table(data, "spool"), base),
        selection=series_filter(_table(data, "selection", False)),
        group_timeout_s=g.num("timeout_s", 10.0, lo=0.05, hi=86400, integer=False),
        group_by=_choice(g, "by", ("series", "study")),
        group_on_association_end=_flag(g, "association_end", True), late=_choice(g, "late", ("ack", "rerun")),
        late_window_s=g.num("late_window_s", 86400.0, lo=1, hi=30 * 86400, integer=False),
        workers=w.num("count", 2, lo=1, hi=64), queue_size=w.num("queue", 64, lo=1, hi=1 << 16),
        watchdog_s=w.num("watchdog_s", 300.0, lo=0.1, hi=86400, integer=False),
        drain_s=w.num("drain_s", 30.0, lo=0, hi=3600, integer=False),
        metrics_port=m.num("port", 0, lo=0, hi=65535), audit_log=a.path("path"))
    for r in (w, g, m, a):
        r.done()
    return cfg


def load_config(path: str | os.PathLike[str]) -> NodeConfig:
    """Read ``node.toml``.

    Raises:
        InvalidInputError: ``not-found`` (no file), ``bad-node-config`` (not TOML, or a key
            that fails validation).
    """
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise InvalidInputError("the node configuration cannot be read", found=f"{p}: "
                                f"{exc.strerror}", fix="check the path", code="not-found") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise InvalidInputError("the node configuration is not valid TOML", code="bad-node-config",
                                found=str(exc)[:200], fix="fix the TOML syntax") from None
    return parse_config(data, p.resolve().parent)


def config_fields() -> list[str]:
    """The NodeConfig field names (for docs and tests)."""
    return [f.name for f in fields(NodeConfig)]
