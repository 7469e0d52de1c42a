"""Key, trust-anchor and passphrase inputs: only regular files of bounded size are read, and an
empty passphrase is refused instead of silently meaning "no passphrase".

``st_size`` is 0 for devices, so a size check alone let ``device_key=/dev/zero`` read until
memory ran out (22.7 GB measured) and a FIFO block forever. Every blocking call here runs in a
thread joined with a timeout, so a regression fails the test instead of hanging it.
"""

from __future__ import annotations

import json
import os
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

import pytest
import typer
from typer.testing import CliRunner

import edgemed_runtime as rt
from edgemed.bundle import Recipient, generate_keypair
from edgemed.cli.bundle import register
from edgemed_runtime.__main__ import main as run_main
from edgemed_runtime.bundle import install_bundle, verify_bundle
from edgemed_runtime.bundle.keys import MAX_PEM_BYTES, load_private_key, load_public_key
from edgemed_runtime.errors import EdgemedError, InvalidInputError
from edgemed_runtime.util import read_regular_file

from .conftest import CREATED, NOW, Keys, SealFn, open_args

BUDGET_S = 1.0


def timed(fn: Callable[[], Any], join_s: float = 10.0) -> tuple[Any, BaseException | None, float]:
    """Run ``fn`` in a daemon thread; return (result, exception, seconds). Fails the test if
    it has not returned after ``join_s`` (the read would block or run away)."""
    box: dict[str, Any] = {}

    def target() -> None:
        t0 = time.perf_counter()
        try:
            box["result"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed back to the test
            box["error"] = exc
        box["seconds"] = time.perf_counter() - t0

    th = threading.Thread(target=target, daemon=True)
    th.start()
    th.join(join_s)
    assert not th.is_alive(), f"still running after {join_s} s (blocked or reading unbounded)"
    return box.get("result"), box.get("error"), box["seconds"]


def _special(kind: str, tmp_path: Path) -> Path:
    if kind == "dev-zero":
        return Path("/dev/zero")
    if kind == "fifo":
        p = tmp_path / "key.fifo"
        os.mkfifo(p)
        return p
    p = tmp_path / "key.d"
    p.mkdir()
    return p


SPECIALS = ["dev-zero", "fifo", "folder"]


def _assert_not_regular(err: BaseException | None, seconds: float, path: Path) -> None:
    assert isinstance(err, InvalidInputError), repr(err)
    assert err.code == "not-a-regular-file"
    assert err.expected == "a regular file" and str(path) in (err.found or "") and err.fix
    assert seconds < BUDGET_S, f"refused after {seconds:.2f} s"


@pytest.mark.parametrize("kind", SPECIALS)
def test_device_key_must_be_a_regular_file(kind: str, tmp_path: Path) -> None:
    path = _special(kind, tmp_path)
    _, err, seconds = timed(lambda: load_private_key(path, what="device private key"))
    _assert_not_regular(err, seconds, path)


@pytest.mark.parametrize("kind", SPECIALS)
def test_trust_anchor_must_be_a_regular_file(kind: str, tmp_path: Path, pristine: dict[str, Path]) -> None:
    path = _special(kind, tmp_path)
    _, err, seconds = timed(lambda: verify_bundle(pristine["r2"], trust=path, now=NOW))
    _assert_not_regular(err, seconds, path)


@pytest.mark.parametrize("kind", ["dev-zero", "fifo"])
def test_open_and_install_refuse_special_device_key(kind: str, tmp_path: Path, keys: Keys,
                                                     pristine: dict[str, Path]) -> None:
    path = _special(kind, tmp_path)
    kw = open_args(keys, tmp_path / "state", device_key=path)
    _, err, seconds = timed(lambda: rt.open(pristine["r2"], **kw))
    _assert_not_regular(err, seconds, path)
    _, err, seconds = timed(lambda: install_bundle(pristine["r2"], tmp_path / "store", **kw))
    _assert_not_regular(err, seconds, path)
    assert not (tmp_path / "store" / "tiny" / "current.json").exists()


def test_key_file_budget(tmp_path: Path, keys: Keys) -> None:
    big = tmp_path / "big.pub"
    big.write_bytes(keys.publisher.public_path.read_bytes() + b"\n" * MAX_PEM_BYTES)
    with pytest.raises(InvalidInputError) as ei:
        load_public_key(big)
    assert ei.value.code == "too-large"
    exact = tmp_path / "exact.bin"
    exact.write_bytes(b"x" * 100)
    assert read_regular_file(exact, 100, "test file") == b"x" * 100
    with pytest.raises(InvalidInputError) as ei:
        read_regular_file(exact, 99, "test file")
    assert ei.value.code == "too-large"
    with pytest.raises(InvalidInputError) as ei:
        load_private_key(tmp_path / "missing.key")
    assert ei.value.code == "not-found"
    # a symlink to a real key is still fine (only what it points at must be a regular file)
    link = tmp_path / "link.pub"
    link.symlink_to(keys.publisher.public_path)
    assert load_public_key(link) is not None
    link_to_fifo = tmp_path / "link.key"
    os.mkfifo(tmp_path / "target.fifo")
    link_to_fifo.symlink_to(tmp_path / "target.fifo")
    _, err, seconds = timed(lambda: load_private_key(link_to_fifo))
    _assert_not_regular(err, seconds, link_to_fifo)


# -- passphrases -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def locked(make_bundle: SealFn, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(a bundle sealed for a passphrase-protected device key, that key); the bundle expires a
    year from now, since ``edgemed-run`` checks expiry against the real clock."""
    d = tmp_path_factory.mktemp("locked")
    dev = generate_keypair(d, kind="device", name="locked", passphrase="correct horse")
    created = min(CREATED, datetime.now(timezone.utc) - timedelta(days=1))
    b = make_bundle(d / "b", 1, recipients=[Recipient.load(dev.public_path)], created=created,
                    expires=datetime.now(timezone.utc) + timedelta(days=365))
    return b, dev.private_path


def _run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, Any]]:
    capsys.readouterr()
    code, err, _ = timed(lambda: run_main([*argv, "--json"]), join_s=60)
    assert err is None, repr(err)
    return code, json.loads(capsys.readouterr().out)


def test_edgemed_run_passphrase_env(locked: tuple[Path, Path], keys: Keys, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str],
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    bundle, key = locked
    base = ["verify", str(bundle), "--trust", str(keys.publisher.public_path), "--device-key",
            str(key), "--state-dir", str(tmp_path / "state")]
    code, out = _run_cli(base, capsys)
    assert code == 2 and out["error"]["code"] == "bad-passphrase"
    assert "--passphrase-env" in out["error"]["fix"]  # the option the fix names exists
    monkeypatch.setenv("DEVPW", "correct horse")
    code, out = _run_cli(base + ["--passphrase-env", "DEVPW"], capsys)
    assert code == 0 and out["ok"] and out["smoke_finite"], out
    monkeypatch.setenv("DEVPW", "wrong")
    code, out = _run_cli(base + ["--passphrase-env", "DEVPW"], capsys)
    assert code == 2 and out["error"]["code"] == "bad-passphrase"
    monkeypatch.setenv("DEVPW", "")
    code, out = _run_cli(base + ["--passphrase-env", "DEVPW"], capsys)
    assert code == 2 and out["error"]["code"] == "empty-passphrase"
    monkeypatch.delenv("DEVPW")
    code, out = _run_cli(base + ["--passphrase-env", "DEVPW"], capsys)
    assert code == 2 and out["error"]["code"] == "missing-passphrase"


def test_edgemed_run_refuses_dev_zero_key(locked: tuple[Path, Path], keys: Keys, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    bundle, _ = locked
    code, out = _run_cli(["verify", str(bundle), "--trust", str(keys.publisher.public_path),
                          "--device-key", "/dev/zero", "--state-dir", str(tmp_path / "s")], capsys)
    assert code == 2 and out["error"]["code"] == "not-a-regular-file"


def test_empty_passphrase_never_means_unencrypted(tmp_path: Path) -> None:
    app = typer.Typer()
    register(app)

    @app.command("version")
    def _version() -> None:  # a second command so typer keeps sub-commands named
        pass

    r = CliRunner().invoke(app, ["keys", "generate", "--out", str(tmp_path), "--name", "dev",
                                 "--passphrase-env", "EMPTY_PW", "--json"], env={"EMPTY_PW": ""})
    assert r.exit_code == 2, r.stdout
    assert json.loads(r.stdout)["error"]["code"] == "empty-passphrase"
    assert not list(tmp_path.iterdir())  # no key written, least of all an unencrypted one
    with pytest.raises(InvalidInputError) as ei:
        generate_keypair(tmp_path, name="dev", passphrase="")
    assert ei.value.code == "empty-passphrase" and not list(tmp_path.iterdir())
    kp = generate_keypair(tmp_path, name="dev", passphrase="pw")
    assert b"ENCRYPTED" in kp.private_path.read_bytes()
    with pytest.raises(EdgemedError) as ei2:
        load_private_key(kp.private_path, password="")
    assert ei2.value.code == "empty-passphrase"
