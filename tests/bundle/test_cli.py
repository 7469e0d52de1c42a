"""The bundle CLI commands through typer's runner (registered on a fresh app, the way the
lead's ``edgemed.cli`` registers modules)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from edgemed.cli.bundle import register

from .conftest import Keys


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    a = typer.Typer(no_args_is_help=True)
    register(a)

    @a.command("version")
    def _version() -> None:  # a second command so typer keeps sub-commands named
        pass
    return a


def _run(app: typer.Typer, *args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    r = CliRunner().invoke(app, [str(a) for a in args], env=env)
    return r.exit_code, r.stdout


def test_cli_end_to_end(app: typer.Typer, artifact: object, tmp_path: Path) -> None:
    k = tmp_path / "k"
    code, out = _run(app, "keys", "generate", "--kind", "publisher", "--out", k, "--json")
    assert code == 0 and json.loads(out)["kind"] == "publisher"
    code, out = _run(app, "keys", "generate", "--name", "tablet", "--out", k,
                     "--passphrase-env", "DEVPW", "--json", env={"DEVPW": "s3cret"})
    assert code == 0
    code, _ = _run(app, "keys", "generate", "--name", "phone", "--scheme", "p256", "--out", k)
    assert code == 0
    code, _ = _run(app, "keys", "generate", "--name", "phone", "--out", k)
    assert code == 2  # exists
    db = tmp_path / "reg.db"
    for rel, out_name in ((1, "b1"), (2, "b2.edgemed")):
        code, out = _run(app, "bundle", artifact.path, "--out", tmp_path / out_name,  # type: ignore[attr-defined]
                         "--publisher-key", k / "publisher.key", "--device", f"ward3={k / 'tablet.pub'}",
                         "--family", "tiny", "--release", rel, "--registry", db, "--json")
        assert code == 0, out
        assert json.loads(out)["devices"] == 1
    code, out = _run(app, "verify", tmp_path / "b2.edgemed", "--trust", k / "publisher.pub", "--json")
    assert code == 0 and json.loads(out)["release"] == 2
    code, out = _run(app, "keys", "add-device", tmp_path / "b2.edgemed", "--device", k / "phone.pub",
                     "--unwrap-key", k / "tablet.key", "--trust", k / "publisher.pub",
                     "--passphrase-env", "DEVPW", "--json", env={"DEVPW": "s3cret"})
    assert code == 0, out
    code, out = _run(app, "registry", "list", "--db", db, "--json")
    assert [e["release"] for e in json.loads(out)] == [1, 2]
    code, out = _run(app, "registry", "diff", "tiny@1", "tiny@2", "--db", db, "--json")
    assert json.loads(out)["fields"]["release"] == [1, 2]
    code, _ = _run(app, "registry", "diff", "tiny@1", "tiny@2", "--db", db)
    assert code == 0
    for args in (("promote", "tiny@1"), ("promote", "tiny@2"), ("rollback", "tiny")):
        code, out = _run(app, "registry", *args, "--db", db)
        assert code == 0, out
    code, out = _run(app, "registry", "show", "tiny:production", "--db", db, "--json")
    assert json.loads(out)["release"] == 1
    code, _ = _run(app, "registry", "show", "tiny@2", "--db", db)
    assert code == 0


def test_cli_refusals_exit_2(app: typer.Typer, keys: Keys, pristine: dict[str, Path],
                             tmp_path: Path) -> None:
    code, out = _run(app, "verify", pristine["r2"], "--trust", keys.other_publisher.public_path, "--json")
    assert code == 2
    err = json.loads(out)["error"]
    assert err["code"] == "wrong-publisher" and err["type"] == "IntegrityError"
    code, out = _run(app, "registry", "show", "nothing", "--db", tmp_path / "r.db", "--json")
    assert code == 2 and json.loads(out)["error"]["code"] == "unknown-bundle"
    code, _ = _run(app, "keys", "generate", "--kind", "wizard", "--out", tmp_path)
    assert code == 2


def test_cli_compression_option(app: typer.Typer, keys: Keys, artifact: object, tmp_path: Path) -> None:
    base = ("bundle", artifact.path, "--publisher-key", keys.publisher.private_path,  # type: ignore[attr-defined]
            "--device", keys.device.public_path, "--family", "tiny", "--release", 3, "--no-register",
            "--json")
    for mode, codec in (("zlib", "zlib"), ("none", "none"), ("auto", "none")):
        code, out = _run(app, *base, "--out", tmp_path / mode, "--compression", mode)
        assert code == 0, out
        assert json.loads(out)["compressed"] == (["model.onnx"] if codec == "zlib" else [])
        man = json.loads((tmp_path / mode / "bundle.json").read_bytes())
        assert man["payloads"][0]["compression"] == codec
    code, out = _run(app, *base, "--out", tmp_path / "bad", "--compression", "brotli")
    assert code == 2 and json.loads(out)["error"]["code"] == "bad-compression"
