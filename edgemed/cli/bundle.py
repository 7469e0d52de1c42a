"""Bundle commands: ``edgemed keys generate|add-device``, ``edgemed bundle``, ``edgemed verify``,
``edgemed registry list|show|diff|promote|rollback|add``. Thin: parse, call edgemed.bundle,
render. Passphrases come from an environment variable or a prompt, never the command line.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, List, Optional

import typer
from rich.table import Table

from .common import JSON_HELP, console, handle_errors, print_json


def _passphrase(env: Optional[str], prompt: bool, *, confirm: bool = False) -> Optional[str]:
    """The passphrase from environment variable ``env``, else from a prompt, else None.

    Raises:
        InvalidInputError: ``missing-passphrase`` (the variable is not set) or
            ``empty-passphrase`` (it, or the prompt, is empty: an empty passphrase would leave
            a new private key unencrypted).
    """
    from edgemed.errors import InvalidInputError

    if env:
        value = os.environ.get(env)
        if value is None:
            raise InvalidInputError("passphrase environment variable is not set", found=env,
                                    fix=f"export {env}=...", code="missing-passphrase")
    elif prompt:
        value = str(typer.prompt("passphrase", hide_input=True, confirmation_prompt=confirm))
    else:
        return None
    if not value:
        raise InvalidInputError("passphrase is empty", expected="a non-empty passphrase",
                                found=f"${env} is empty" if env else "an empty answer",
                                fix=f"export {env}=<passphrase>, or drop --passphrase-env for "
                                "an unprotected key" if env else "type a passphrase, or drop "
                                "--passphrase for an unprotected key", code="empty-passphrase")
    return value


def _kv_table(title: str, rows: dict[str, Any]) -> Table:
    t = Table(title=title, show_header=False)
    t.add_column("field", style="bold")
    t.add_column("value")
    for k, v in rows.items():
        t.add_row(k, str(v))
    return t


def register(app: typer.Typer) -> None:
    """Add the bundle, keys and registry commands to ``app``."""
    keys_app = typer.Typer(help="Publisher and device key pairs.", no_args_is_help=True)
    registry_app = typer.Typer(help="Local registry of sealed bundles and their lineage.",
                               no_args_is_help=True)
    app.add_typer(keys_app, name="keys")
    app.add_typer(registry_app, name="registry")

    @keys_app.command("generate")
    def keys_generate(
        kind: str = typer.Option("device", "--kind", help="publisher (ECDSA P-256) or device"),
        out: Path = typer.Option(Path("."), "--out", "-o", help="folder for NAME.key / NAME.pub"),
        name: Optional[str] = typer.Option(None, "--name", help="file stem (default: the kind)"),
        scheme: str = typer.Option("x25519", "--scheme", help="device keys: x25519 | p256 | rsa"),
        passphrase_env: Optional[str] = typer.Option(None, "--passphrase-env", help="protect the private key with the passphrase in this env var"),
        passphrase: bool = typer.Option(False, "--passphrase", help="prompt for a passphrase"),
        overwrite: bool = typer.Option(False, "--overwrite"),
        as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
    ) -> None:
        """Generate a publisher or device key pair (PEM)."""
        from edgemed.bundle import generate_keypair

        with handle_errors(as_json):
            kp = generate_keypair(out, kind=kind, name=name, scheme=scheme, overwrite=overwrite,
                                  passphrase=_passphrase(passphrase_env, passphrase, confirm=True))
            d = {"private_key": str(kp.private_path), "public_key": str(kp.public_path),
                 "fingerprint": kp.fingerprint, "kind": kp.kind, "scheme": kp.scheme}
            if as_json:
                print_json({"ok": True, **d})
            else:
                console.print(_kv_table(f"{kind} key pair", d))

    @keys_app.command("add-device")
    def keys_add_device(
        bundle: Path = typer.Argument(..., help="bundle directory or .edgemed file"),
        device: str = typer.Option(..., "--device", help="device public key: PATH.pub or ID=PATH.pub"),
        unwrap_key: Path = typer.Option(..., "--unwrap-key", help="private key of a device (or escrow) the bundle is already wrapped for"),
        trust: Path = typer.Option(..., "--trust", help="publisher public key"),
        passphrase_env: Optional[str] = typer.Option(None, "--passphrase-env", help="passphrase of --unwrap-key"),
        as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
    ) -> None:
        """Wrap the bundle's data key for one more device (no re-encryption, no re-signing)."""
        from edgemed.bundle import Recipient, add_device

        with handle_errors(as_json):
            rel = add_device(bundle, Recipient.load(device), unwrap_key=unwrap_key,
                             unwrap_key_password=_passphrase(passphrase_env, False), trust=trust)
            if as_json:
                print_json({"ok": True, "added": rel})
            else:
                console.print(f"added [bold]{rel}[/] to {bundle}")

    @app.command("bundle")
    def bundle_cmd(
        artifact: Path = typer.Argument(..., help="artifact directory (output of edgemed build)"),
        out: Path = typer.Option(..., "--out", "-o", help="bundle folder, or NAME.edgemed for one file"),
        publisher_key: Path = typer.Option(..., "--publisher-key", help="publisher private key (ECDSA P-256 PEM)"),
        device: List[str] = typer.Option([], "--device", help="device public key PATH.pub or ID=PATH.pub (repeat)"),
        family: str = typer.Option(..., "--family", help="model family; rollback is tracked per family"),
        release: int = typer.Option(..., "--release", help="monotonic release counter (>= 1)"),
        version: Optional[str] = typer.Option(None, "--version", help="human version (default: the release)"),
        expires_days: int = typer.Option(365, "--expires-days", help="days until devices refuse it"),
        hardware_id: List[str] = typer.Option([], "--hardware-id", help="allowed hardware id (repeat; none = any)"),
        min_runtime: Optional[str] = typer.Option(None, "--min-runtime", help="oldest runtime version allowed"),
        compression: str = typer.Option("auto", "--compression", help="payload compression before encryption: auto (zlib where it saves >= 20%) | zlib | none"),
        passphrase_env: Optional[str] = typer.Option(None, "--passphrase-env", help="passphrase of the publisher key"),
        overwrite: bool = typer.Option(False, "--overwrite"),
        register_it: bool = typer.Option(True, "--register/--no-register", help="record it in the registry"),
        registry: Optional[Path] = typer.Option(None, "--db", help="registry database (default ~/.edgemed/registry.db)"),
        registry_alias: Optional[Path] = typer.Option(None, "--registry", hidden=True, help="old name of --db"),
        as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
    ) -> None:
        """Seal an artifact: encrypt, sign (OMS), wrap the data key for each device."""
        from edgemed.bundle import Recipient, Registry, SealOptions, seal
        from edgemed.errors import InvalidInputError

        with handle_errors(as_json):
            if expires_days < 1:
                raise InvalidInputError("--expires-days must be >= 1", found=str(expires_days),
                                        code="bad-expiry")
            created = datetime.now(timezone.utc).replace(microsecond=0)
            opts = SealOptions(family=family, release=release, version=version,
                               expires=created + timedelta(days=expires_days),
                               hardware_ids=tuple(hardware_id), min_runtime_version=min_runtime,
                               compression=compression)
            path = seal(artifact, out, publisher_key=publisher_key, options=opts,
                        recipients=[Recipient.load(d) for d in device], created=created,
                        publisher_key_password=_passphrase(passphrase_env, False),
                        overwrite=overwrite)
            from edgemed_runtime.sdk import inspect_bundle

            info = inspect_bundle(path)
            if register_it:
                Registry(registry or registry_alias).add(path)
            d = {"bundle": str(path), "bundle_id": info["bundle_id"], "family": family,
                 "release": release, "expires": info["expires"],
                 "devices": len(info["devices"]), "registered": register_it,
                 "compressed": sorted(f["name"] for f in info["manifest"]["payloads"]
                                      if f.get("compression", "none") != "none")}
            if as_json:
                print_json({"ok": True, **d})
            else:
                console.print(_kv_table("sealed bundle", d))

    @app.command("verify")
    def verify_cmd(
        bundle: Path = typer.Argument(..., help="bundle directory or .edgemed file"),
        trust: Path = typer.Option(..., "--trust", help="publisher public key (PEM)"),
        hardware_id: Optional[str] = typer.Option(None, "--hardware-id", help="also check this hardware id"),
        as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
    ) -> None:
        """Verify a bundle's signature, file hashes and manifest (no device key needed)."""
        from edgemed_runtime.sdk import verify_bundle

        with handle_errors(as_json):
            vb = verify_bundle(bundle, trust=trust, hardware_id=hardware_id, require_hardware=False)
            m = vb.manifest
            d = {"ok": True, "bundle_id": m.bundle_id, "family": m.family, "release": m.release,
                 "version": m.version, "expires": m.expires,
                 "signed_files": len(vb.statement.resources), "devices": len(vb.files.keys)}
            if as_json:
                print_json(d)
            else:
                console.print(_kv_table("[green]verified[/]", d))

    # -- registry --------------------------------------------------------------------------
    db_opt = typer.Option(None, "--db", help="registry database (default ~/.edgemed/registry.db)")

    @registry_app.command("add")
    def registry_add(
        bundle: Path = typer.Argument(...),
        trust: Optional[Path] = typer.Option(None, "--trust", help="verify with this publisher key first"),
        db: Optional[Path] = db_opt,
        as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
    ) -> None:
        """Register an existing bundle."""
        from edgemed.bundle import Registry

        with handle_errors(as_json):
            e = Registry(db).add(bundle, trust=trust)
            print_json({"ok": True, **e.to_dict()}) if as_json else console.print(
                f"registered {e.family}@{e.release} ({e.bundle_id})")

    @registry_app.command("list")
    def registry_list(
        family: Optional[str] = typer.Option(None, "--family"),
        db: Optional[Path] = db_opt,
        as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
    ) -> None:
        """List registered bundles."""
        from edgemed.bundle import Registry

        with handle_errors(as_json):
            rows = Registry(db).list(family)
            if as_json:
                print_json([e.to_dict() for e in rows])
                return
            t = Table(title="bundles")
            for c in ("family", "release", "version", "bundle id", "parent", "channels", "path"):
                t.add_column(c)
            for e in rows:
                t.add_row(e.family, str(e.release), e.version, e.bundle_id[:12],
                          (e.parent_id or "")[:12], ",".join(e.channels), e.path)
            console.print(t)

    @registry_app.command("show")
    def registry_show(
        ref: str = typer.Argument(..., help="bundle id (prefix), family@release or family:channel"),
        db: Optional[Path] = db_opt,
        as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
    ) -> None:
        """Show one bundle: manifest, lineage and events."""
        from edgemed.bundle import Registry

        with handle_errors(as_json):
            d = Registry(db).show(ref)
            if as_json:
                print_json(d)
                return
            console.print(_kv_table(f"{d['family']}@{d['release']}", {
                k: d[k] for k in ("bundle_id", "version", "path", "parent_id", "created",
                                  "channels", "verified")}))
            console.print("lineage: " + " <- ".join(
                [f"r{d['release']}"] + [f"r{a['release']}" for a in d["lineage"]]))
            console.print_json(data={"metrics": d["manifest"].get("metrics"),
                                     "events": d["events"]})

    @registry_app.command("diff")
    def registry_diff(
        a: str = typer.Argument(...),
        b: str = typer.Argument(...),
        db: Optional[Path] = db_opt,
        as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
    ) -> None:
        """What changed between two bundles: passes, configs, metrics, hashes."""
        from edgemed.bundle import Registry

        with handle_errors(as_json):
            d = Registry(db).diff(a, b)
            if as_json:
                print_json(d)
                return
            t = Table(title=f"r{d['a']['release']} -> r{d['b']['release']}")
            for c in ("section", "key", "a", "b"):
                t.add_column(c)
            for k, (va, vb) in d["fields"].items():
                t.add_row("field", k, str(va)[:60], str(vb)[:60])
            for k in d["passes"]["added"]:
                t.add_row("pass", k, "", "added")
            for k in d["passes"]["removed"]:
                t.add_row("pass", k, "removed", "")
            for p, ch in d["configs"].items():
                for k, (va, vb) in ch.items():
                    t.add_row("config", f"{p}.{k}", str(va)[:60], str(vb)[:60])
            for k, v in d["metrics"].items():
                t.add_row("metric", k, str(v["a"]), f"{v['b']}" + (f" ({v['delta']:+.4g})" if "delta" in v else ""))
            for k, (va, vb) in d["hashes"].items():
                t.add_row("hash", k, str(va)[:16], str(vb)[:16])
            console.print(t)

    @registry_app.command("promote")
    def registry_promote(
        ref: str = typer.Argument(...),
        channel: str = typer.Option("production", "--channel"),
        note: Optional[str] = typer.Option(None, "--note"),
        db: Optional[Path] = db_opt,
        as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
    ) -> None:
        """Point a channel (default production) of the bundle's family at it."""
        from edgemed.bundle import Registry

        with handle_errors(as_json):
            e = Registry(db).promote(ref, channel, note=note)
            print_json({"ok": True, **e.to_dict()}) if as_json else console.print(
                f"{e.family}:{channel} -> r{e.release} ({e.bundle_id[:12]})")

    @registry_app.command("rollback")
    def registry_rollback(
        family: str = typer.Argument(...),
        channel: str = typer.Option("production", "--channel"),
        note: Optional[str] = typer.Option(None, "--note"),
        db: Optional[Path] = db_opt,
        as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
    ) -> None:
        """Point a channel back at the bundle it held before (devices still refuse lower releases:
        re-seal the older artifact with a higher --release to ship it)."""
        from edgemed.bundle import Registry

        with handle_errors(as_json):
            e = Registry(db).rollback(family, channel, note=note)
            print_json({"ok": True, **e.to_dict()}) if as_json else console.print(
                f"{family}:{channel} -> r{e.release} ({e.bundle_id[:12]}); devices that accepted "
                "a higher release refuse it until it is re-sealed with a higher --release")
