"""``edgemed-run`` / ``python -m edgemed_runtime``: the device command line (argparse only).

    edgemed-run info                                  backends and execution providers here
    edgemed-run verify MODEL [--trust PUB] [--device-key KEY [--passphrase-env VAR]]
    edgemed-run run MODEL INPUT... [--trust PUB --device-key KEY] [--passphrase-env VAR]
                                   [--backend B] [--threads N]
    edgemed-run serve NODE.TOML [--redeliver]         the bedside DICOM node (docs/node.md)

MODEL is an artifact directory, a bundle (directory or ``.edgemed``) or an ``.onnx`` file; INPUT
is a DICOM file or a folder (searched recursively for ``.dcm`` / ``.dicom`` files). Output is JSON
on stdout. Exit codes: 0 ok, 1 some inputs failed, 2 refused (bad input, bundle that does not
verify, backend missing, state folder that cannot be written). A device key's passphrase comes
from the environment variable ``--passphrase-env`` names, never from the command line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .api import is_bundle
from .errors import EdgemedError, InvalidInputError

DICOM_SUFFIXES = (".dcm", ".dicom")


def _print(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def passphrase_from_env(var: str | None) -> str | None:
    """The device key's passphrase from environment variable ``var`` (None: no passphrase).

    Raises:
        InvalidInputError: ``missing-passphrase`` (not set) or ``empty-passphrase`` (empty).
    """
    if var is None:
        return None
    value = os.environ.get(var)
    if value is None:
        raise InvalidInputError("passphrase environment variable is not set", found=var,
                                fix=f"export {var}=<passphrase of the device key>",
                                code="missing-passphrase")
    if not value:
        raise InvalidInputError("passphrase environment variable is empty",
                                expected="the device key's passphrase", found=f"${var} is empty",
                                fix=f"export {var}=<passphrase>, or drop --passphrase-env for "
                                "an unprotected key", code="empty-passphrase")
    return value


def _bundle_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    kw: dict[str, Any] = {}
    for name in ("trust", "device_key", "state_dir", "hardware_id", "target"):
        v = getattr(args, name, None)
        if v is not None:
            kw[name] = v
    pw = passphrase_from_env(getattr(args, "passphrase_env", None))
    if pw is not None:
        kw["device_key_password"] = pw
    return kw


def _options(args: argparse.Namespace) -> dict[str, Any]:
    return {"threads": args.threads} if getattr(args, "threads", None) else {}


def expand_inputs(inputs: Sequence[str]) -> list[Path]:
    """Files as given, folders expanded to their DICOM files (sorted).

    Raises:
        InvalidInputError: a path that does not exist, or a folder without DICOM files.
    """
    out: list[Path] = []
    for s in inputs:
        p = Path(s)
        if p.is_dir():
            found = sorted(q for q in p.rglob("*") if q.is_file()
                           and q.suffix.lower() in DICOM_SUFFIXES)
            if not found:
                raise InvalidInputError("no DICOM files in folder", expected="*.dcm files",
                                        found=str(p), code="empty")
            out += found
        elif p.is_file():
            out.append(p)
        else:
            raise InvalidInputError("input does not exist", found=str(p), code="not-found",
                                    fix="pass DICOM files or folders")
    return out


def cmd_info(args: argparse.Namespace) -> int:
    from . import __version__
    from .backends.base import backend_class, backend_names

    rows = []
    for name in backend_names():
        cls = backend_class(name)
        rows.append({"name": name, "formats": list(cls.formats), "available": cls.is_available(),
                     "missing": cls.missing()})
    info: dict[str, Any] = {"ok": True, "runtime_version": __version__, "backends": rows}
    try:
        import onnxruntime as ort

        info["onnxruntime_providers"] = list(ort.get_available_providers())
    except ImportError:
        pass
    _print(info)
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from .api import open as open_model

    p = Path(args.model)
    report: dict[str, Any] = {"ok": True, "model": str(p)}
    if is_bundle(p):
        from .bundle import verify_bundle

        vb = verify_bundle(p, trust=args.trust, hardware_id=args.hardware_id, target=args.target,
                           require_hardware=args.hardware_id is not None)
        m = vb.manifest
        report.update({"kind": "bundle", "signature": "verified", "bundle_id": m.bundle_id,
                       "family": m.family, "release": m.release, "version": m.version,
                       "expires": m.expires, "target": m.target, "backend": m.backend})
        if args.device_key is None:
            report["decrypted"] = "not checked: pass --device-key to decrypt and run a smoke test"
            _print(report)
            return 0
    else:
        report["kind"] = "model"
    kw = _bundle_kwargs(args) if is_bundle(p) else {}
    if kw:
        kw["persist"] = False  # verifying must not move the rollback counter
    with open_model(p, backend=args.backend, options=_options(args), **kw) as sess:
        x = np.zeros((1, *sess.io.sample_shape), dtype=np.dtype(sess.io.input_dtype))
        out = sess.run({sess.io.input_name: x})[sess.io.output_names[0]]
        report.update({"backend": sess.backend, "format": sess.info.get("format"),
                       "smoke_output_shape": list(out.shape),
                       "smoke_finite": bool(np.isfinite(out).all())})
    if not report["smoke_finite"]:
        report["ok"] = False
        _print(report)
        return 2
    _print(report)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from .api import open as open_model

    paths = expand_inputs(args.inputs)
    p = Path(args.model)
    kw = _bundle_kwargs(args) if is_bundle(p) else {}
    rows: list[dict[str, Any]] = []
    failed = 0
    with open_model(p, backend=args.backend, options=_options(args), **kw) as sess:
        labels = list(sess.labels)
        for f in paths:
            try:
                probs = sess.predict(str(f))[0]
            except EdgemedError as exc:
                failed += 1
                rows.append({"file": str(f), "ok": False, "error": exc.to_dict()})
                continue
            names = labels if len(labels) == len(probs) else [str(i) for i in range(len(probs))]
            rows.append({"file": str(f), "ok": True, "prediction": names[int(probs.argmax())],
                         "probabilities": {n: float(v) for n, v in zip(names, probs)}})
        backend = sess.backend
    _print({"ok": failed == 0, "model": str(p), "backend": backend, "predictions": rows,
            "failed": failed})
    return 1 if failed else 0


def cmd_serve(args: argparse.Namespace) -> int:
    from .node import Node, load_config

    cfg = load_config(args.config)
    node = Node(cfg, passphrase=passphrase_from_env(cfg.model.passphrase_env))
    if args.redeliver:
        ok, bad = node.redeliver_dead_letters()
        _print({"ok": bad == 0, "redelivered": ok, "still_failing": bad})
    node.serve_forever()
    return 0


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="edgemed-run",
                                 description="Run edgemed artifacts and bundles on the device.")
    sub = ap.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="backends and execution providers available here")

    def model_args(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("model", help="artifact directory, bundle (.edgemed / folder) or .onnx")
        sp.add_argument("--trust", help="publisher public key (bundles)")
        sp.add_argument("--device-key", dest="device_key", help="device private key (bundles)")
        sp.add_argument("--passphrase-env", dest="passphrase_env", metavar="VAR",
                        help="environment variable holding the device key's passphrase")
        sp.add_argument("--state-dir", dest="state_dir", help="accepted-release state folder")
        sp.add_argument("--hardware-id", dest="hardware_id", help="this device's hardware id")
        sp.add_argument("--target", help="this device's target profile name (checked)")
        sp.add_argument("--backend", help="override the model's backend")
        sp.add_argument("--threads", type=int, help="intra-op threads")

    v = sub.add_parser("verify", help="check a bundle's signature (and, with --device-key, "
                       "decrypt it and run a smoke inference); smoke-test an artifact")
    model_args(v)
    r = sub.add_parser("run", help="predict on DICOM files / folders; print JSON")
    model_args(r)
    r.add_argument("inputs", nargs="+", help="DICOM files or folders")
    s = sub.add_parser("serve", help="the bedside DICOM node: receive, infer, send results "
                       "(runs until SIGTERM)")
    s.add_argument("config", help="node.toml (see docs/node.md)")
    s.add_argument("--redeliver", action="store_true",
                   help="first try the dead-letter folder's results again")
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code (0 ok, 1 some inputs failed, 2 refused)."""
    args = parser().parse_args(argv)
    try:
        return {"info": cmd_info, "verify": cmd_verify, "run": cmd_run,
                "serve": cmd_serve}[args.command](args)
    except EdgemedError as exc:
        _print({"ok": False, "error": exc.to_dict()})
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
