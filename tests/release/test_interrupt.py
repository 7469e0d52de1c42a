"""Ctrl-C: SIGINT to `edgemed build` and `edgemed release` once they report a step: exit 130,
"interrupted", no traceback, no partial output (no artifact, no staging folder); the release
records the interruption in its step state and in a release.json that supersedes the old one."""

from __future__ import annotations

import json
import queue
import signal
import threading
import time
from pathlib import Path
from subprocess import Popen

import torch

from .conftest import cli


def _interrupt_after(proc: Popen[str], seen: str, timeout: float = 600) -> tuple[str, str]:
    """Wait until ``proc`` writes a stderr line containing ``seen``, send SIGINT, return its
    (stdout, stderr)."""
    lines: queue.Queue[str | None] = queue.Queue()
    err: list[str] = []

    def pump() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        line = lines.get(timeout=max(0.1, end - time.monotonic()))
        if line is None:
            raise AssertionError(f"ended before {seen!r} (exit {proc.wait()}): {''.join(err)[-1500:]}")
        err.append(line)
        if seen in line:
            break
    proc.send_signal(signal.SIGINT)  # at once: a quiet machine finishes a tiny build in seconds
    out = proc.stdout.read() if proc.stdout else ""
    proc.wait(timeout=180)
    while (line := lines.get(timeout=30)) is not None:
        err.append(line)
    return out, "".join(err)


def _hidden(folder: Path) -> list[Path]:
    """Staging leftovers: folders whose name starts with a dot, and *.tmp."""
    return [p for p in folder.rglob("*") if (p.is_dir() and p.name.startswith("."))
            or p.name.endswith(".tmp")]


def test_sigint_during_build(tmp_path: Path, synthetic_dir: Path, trained_tiny: torch.nn.Module
                             ) -> None:
    torch.save(trained_tiny.state_dict(), tmp_path / "tiny.pt")
    out_dir = tmp_path / "out"
    proc = cli("build", "--model", "tests.helpers.tiny_models:make_net", "--weights",
               str(tmp_path / "tiny.pt"), "--input", "1x1x16x16", "--calib", str(synthetic_dir),
               "--val", str(synthetic_dir), "--target", "cpu-x86", "--labels",
               "no_lesion,lesion", "--out", str(out_dir / "art"))
    out, err = _interrupt_after(proc, "loading calibration data")
    assert proc.returncode == 130, err[-1500:]
    assert "interrupted" in err and "Traceback" not in err + out, err[-1500:]
    assert not (out_dir / "art").exists()
    assert _hidden(out_dir) == [] if out_dir.exists() else True


def test_sigint_during_release(quick_project: Path) -> None:
    rel = quick_project.parent / "rel"
    rel.mkdir()
    (rel / "release.json").write_text('{"ok": true, "note": "an older run"}')
    proc = cli("release", str(quick_project))
    out, err = _interrupt_after(proc, "quick.toml: ")
    assert proc.returncode == 130, err[-1500:]
    assert "interrupted" in err and "Traceback" not in err + out, err[-1500:]
    result = json.loads((rel / "release.json").read_text())
    assert result["ok"] is False and result["exit_code"] == 130
    assert result["interrupted"]["target"].endswith("quick.toml")
    assert result["targets"][0]["status"] == "interrupted"
    state = json.loads((rel / ".release-state.json").read_text())
    assert state["_last_run"]["status"] == "interrupted"
    assert _hidden(rel) == []
    for b in (rel / "bundles").glob("*"):  # a bundle is there whole or not at all
        assert (b / "bundle.json").is_file() and (b / "model.sig").is_file()
