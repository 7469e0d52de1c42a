"""``edgemed-run`` / ``python -m edgemed_runtime``: the device command line (argparse only).

    edgemed-run info                                  backends and execution providers here
    edgemed-run verify MODEL [--trust PUB] [--device-key KEY [--passphrase-env VAR]]
    edgemed-run run MODEL INPUT... [--trust PUB --device-key KEY] [--passphrase-env VAR]
                                   [--backend B] [--threads N]
    edgemed-run serve NODE.TOML [--redeliver]         the bedside DICOM node (docs/node.md)

MODEL is an artifact directory, a bundle (directory or ``.edgemed``) or an ``.onnx`` file; INPUT
is a DICOM file or a folder (searched recursively for ``.dcm`` / ``.dicom`` files). Output is
human-readable tables; ``--json`` prints one JSON document instead (for scripts). Before a bundle
is opened its declared requirements (bundle.json ``requires``: backend, runtime extra, minimum
versions) are checked, and a missing extra is refused with the install line that adds it.
Exit codes (edgemed_runtime.exit_codes, docs/cli.md): 0 ok, 4 some inputs failed (partial),
2 refused (bad input, bundle that does not verify, backend or extra missing, state folder that
cannot be written), 130 interrupted. A device key's passphrase comes from the environment
variable ``--passphrase-env`` names, never from the command line.
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
from .exit_codes import ExitCode

DICOM_SUFFIXES = (".dcm", ".dicom")


def _print(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> str:
    """Plain-text columns (the runtime has no rich): a header, a rule, one line per row; no
    truncation, whatever the terminal."""
    cells = [[str(c) for c in header], *[["-" if c is None else str(c) for c in r] for r in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines) + "\n"


def _human_error(err: dict[str, Any]) -> str:
    out = [f"error [{err.get('code')}]: {err.get('message')}"]
    out += [f"  {k}: {err[k]}" for k in ("expected", "found", "fix") if err.get(k)]
    return "\n".join(out) + "\n"


def _show(args: argparse.Namespace, report: dict[str, Any], human: str) -> None:
    """The report as JSON (``--json``) or as ``human`` text, on stdout."""
    if getattr(args, "json", False):
        _print(report)
    else:
        sys.stdout.write(human)


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
    human = f"edgemed-runtime {__version__}\n" + table(
        [(r["name"], "yes" if r["available"] else "no", ", ".join(r["formats"]),
          _install_hint(r["name"]) if not r["available"] else "") for r in rows],
        ("backend", "available", "formats", "to install"))
    if info.get("onnxruntime_providers"):
        human += "onnxruntime providers: " + ", ".join(info["onnxruntime_providers"]) + "\n"
    _show(args, info, human)
    return 0


def _install_hint(backend: str) -> str:
    from .bundle.requirements import requirements_for

    try:
        return requirements_for(backend, versions=False).install_line
    except EdgemedError:
        return ""


def _check_artifact(path: Path, backend: str | None) -> None:
    """An artifact folder's backend must be installed here: refuse with its install line."""
    from .artifact import ARTIFACT_FILE, Artifact
    from .bundle.requirements import check_requirements, requirements_for

    if backend is None and path.is_dir() and (path / ARTIFACT_FILE).is_file():
        check_requirements(requirements_for(Artifact.load(path).backend, versions=False))


def cmd_verify(args: argparse.Namespace) -> int:
    from .api import open as open_model

    p = Path(args.model)
    report: dict[str, Any] = {"ok": True, "model": str(p)}
    if is_bundle(p):
        from .bundle import verify_bundle

        from .bundle.requirements import check_requirements, requirements_of

        vb = verify_bundle(p, trust=args.trust, hardware_id=args.hardware_id, target=args.target,
                           require_hardware=args.hardware_id is not None)
        m = vb.manifest
        req = requirements_of(m)
        report.update({"kind": "bundle", "signature": "verified", "bundle_id": m.bundle_id,
                       "family": m.family, "release": m.release, "version": m.version,
                       "expires": m.expires, "target": m.target, "backend": m.backend,
                       "requires": req.to_dict(), "install": req.install_line})
        if args.backend is None:
            check_requirements(req)
        if args.device_key is None:
            report["decrypted"] = "not checked: pass --device-key to decrypt and run a smoke test"
            _show(args, report, _verify_text(report))
            return 0
    else:
        report["kind"] = "model"
        _check_artifact(p, args.backend)
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
        _show(args, report, _verify_text(report))
        return int(ExitCode.BAD_INPUT)
    _show(args, report, _verify_text(report))
    return int(ExitCode.OK)


def _verify_text(r: dict[str, Any]) -> str:
    keys = ("kind", "signature", "family", "release", "version", "expires", "backend", "format",
            "install", "decrypted", "smoke_output_shape", "smoke_finite")
    rows = [(k, r[k]) for k in keys if k in r]
    head = f"{r['model']}: {'ok' if r.get('ok') else 'FAILED'}\n"
    return head + table(rows, ("check", "result"))


def _run_rows(sess: Any, inputs: Sequence[str]) -> list[dict[str, Any]]:
    """One row per input: per file for an image model, per series folder for a volume model."""
    from .volume.run import result_row, series_folders
    from .volume.spec import VolumeSpec

    volume = isinstance(sess.preprocess, VolumeSpec)
    paths = series_folders(inputs) if volume else expand_inputs(inputs)
    labels = list(sess.labels)
    rows: list[dict[str, Any]] = []
    for f in paths:
        try:
            rows.append({"file": str(f), "ok": True,
                         **result_row(sess.predict(f if volume else str(f)), labels)})
        except EdgemedError as exc:
            rows.append({"file": str(f), "ok": False, "error": exc.to_dict()})
    return rows


def _row_line(r: dict[str, Any]) -> tuple[str, str, str]:
    if not r["ok"]:
        return r["file"], "FAILED", f"[{r['error']['code']}] {r['error']['message']}"
    if "volumes_ml" in r:
        return r["file"], r["prediction"], ", ".join(f"{k} {v:.1f} ml"
                                                     for k, v in r["volumes_ml"].items())
    return r["file"], r["prediction"], f"{max(r['probabilities'].values()):.3f}"


def cmd_run(args: argparse.Namespace) -> int:
    from .api import open as open_model

    p = Path(args.model)
    kw = _bundle_kwargs(args) if is_bundle(p) else {}
    if not kw:
        _check_artifact(p, args.backend)
    with open_model(p, backend=args.backend, options=_options(args), **kw) as sess:
        rows = _run_rows(sess, args.inputs)
        backend = sess.backend
    failed = sum(not r["ok"] for r in rows)
    report = {"ok": failed == 0, "model": str(p), "backend": backend, "predictions": rows,
              "failed": failed}
    human = table([_row_line(r) for r in rows], ("input", "prediction", "probability / volumes")) + \
        f"{len(rows) - failed} of {len(rows)} inputs predicted ({backend})\n"
    _show(args, report, human)
    return int(ExitCode.PARTIAL) if failed else int(ExitCode.OK)


def cmd_serve(args: argparse.Namespace) -> int:
    from .node import Node, load_config

    cfg = load_config(args.config)
    node = Node(cfg, passphrase=passphrase_from_env(cfg.model.passphrase_env))
    if args.redeliver:
        ok, bad = node.redeliver_dead_letters()
        _print({"ok": bad == 0, "redelivered": ok, "still_failing": bad})
    node.serve_forever()
    return 0


def cmd_agent(args: argparse.Namespace) -> int:
    from .agent import run_agent

    return run_agent(args)


def _json_arg(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--json", action="store_true",
                    help="print one JSON document (for scripts) instead of tables")


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="edgemed-run",
                                 description="Run edgemed artifacts and bundles on the device.")
    sub = ap.add_subparsers(dest="command", required=True)
    _json_arg(sub.add_parser("info", help="backends and execution providers available here"))

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
        _json_arg(sp)

    v = sub.add_parser("verify", help="check a bundle's signature (and, with --device-key, "
                       "decrypt it and run a smoke inference); smoke-test an artifact")
    model_args(v)
    r = sub.add_parser("run", help="predict on DICOM files / folders (a table; --json: JSON)")
    model_args(r)
    r.add_argument("inputs", nargs="+", help="DICOM files or folders; series folders for a volume model")
    s = sub.add_parser("serve", help="the bedside DICOM node: receive, infer, send results "
                       "(runs until SIGTERM)")
    s.add_argument("config", help="node.toml (see docs/node.md)")
    s.add_argument("--redeliver", action="store_true",
                   help="first try the dead-letter folder's results again")
    from .agent import add_agent_parser

    add_agent_parser(sub)
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code (0 ok, 4 some inputs failed, 2 refused, 130
    interrupted; edgemed_runtime.exit_codes)."""
    args = parser().parse_args(argv)
    try:
        return {"info": cmd_info, "verify": cmd_verify, "run": cmd_run,
                "serve": cmd_serve, "agent": cmd_agent}[args.command](args)
    except EdgemedError as exc:
        _show(args, {"ok": False, "error": exc.to_dict()}, "")
        if not getattr(args, "json", False):
            sys.stderr.write(_human_error(exc.to_dict()))
        return exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return int(ExitCode.INTERRUPTED)


if __name__ == "__main__":
    sys.exit(main())
