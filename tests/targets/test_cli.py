"""``edgemed targets list|show|check`` (the module registers itself on any typer app)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    from edgemed.cli import targets

    a = typer.Typer()
    targets.register(a)

    @a.command()
    def version() -> None:  # a second command keeps typer in sub-command mode
        pass

    return a


def run(app: typer.Typer, *args: str) -> tuple[int, str]:
    res = CliRunner().invoke(app, list(args))
    return res.exit_code, res.output


def test_list_json(app: typer.Typer) -> None:
    code, out = run(app, "targets", "list", "--json")
    assert code == 0
    names = {t["name"] for t in json.loads(out)["targets"]}
    assert {"cpu-x86", "gpu-cuda", "mobile-android", "mobile-ios", "openvino-cpu",
            "cpu-arm64"} <= names


def test_show_table_and_json(app: typer.Typer) -> None:
    code, out = run(app, "targets", "show", "cpu-x86")
    assert code == 0 and "ov-nncf-int8" in out and "quantize_openvino" in out
    code, out = run(app, "targets", "show", "gpu-cuda", "--json")
    t = json.loads(out)["target"]
    assert code == 0 and t["default_variant"] == "trt-int8" and len(t["sha256"]) == 64


def test_check_json(app: typer.Typer) -> None:
    code, out = run(app, "targets", "check", "gpu-cuda", "cpu-x86", "--json")
    checks = {c["target"]: c for c in json.loads(out)["checks"]}
    assert code == 0 and checks["cpu-x86"]["ok"] is True
    assert {v["name"] for v in checks["gpu-cuda"]["variants"]} == {"trt-int8", "trt-fp16",
                                                                  "ort-cuda-fp16"}
    code, out = run(app, "targets", "check", "mobile-android", "gpu-cuda", "openvino-cpu")
    assert code == 0 and "mobile-android" in out and "trt-int8" in out


def test_user_dir_and_refusal(app: typer.Typer, tmp_path: Path) -> None:
    (tmp_path / "bad.toml").write_text('name = "bad"\ndefault_variant = "a"\n[[variants]]\n'
                                       'name = "a"\nbackend = "openvino"\n'
                                       'passes = [{ pass = "export_onnx" }, { pass = "ort_format" }]\n')
    code, out = run(app, "targets", "show", "bad", "--dir", str(tmp_path), "--json")
    err = json.loads(out)["error"]
    assert code == 2 and err["code"] == "backend-format"
    code, out = run(app, "targets", "show", "nope", "--json")
    assert code == 2 and json.loads(out)["error"]["code"] == "unknown-target"
