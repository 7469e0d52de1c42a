"""Opening and running a bundle sends nothing and writes nothing outside the state dir.

A fresh child process, with HOME, TMPDIR and the working directory set to empty folders and no
CI variables (openvino_telemetry keeps quiet only in CI), opens a sealed bundle on every
installed backend (onnxruntime; OpenVINO from a packed IR and from ONNX bytes) and predicts 200
times each. The child watches itself with an audit hook (``sys.addaudithook``: socket connects,
name look-ups, forks, spawns, execs), which forked children inherit and report on stderr too.
Afterwards no file may exist under HOME outside the state dir, nor in TMPDIR or the working
directory. Where strace works, a second run checks the same at the system-call level (native
code included): no ``connect``, no new process, no ``execve`` after the child's own.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgemed_runtime.backends import backend_class

CALLS = 200
AUDIT_TAG = "EDGEMED-AUDIT"

CHILD = r'''
import json, os, sys

WATCH = {"socket.connect", "socket.getaddrinfo", "socket.gethostbyname", "socket.gethostbyaddr",
         "socket.sendto", "socket.sendmsg", "socket.bind", "os.fork", "os.forkpty",
         "os.posix_spawn", "os.exec", "os.system", "subprocess.Popen", "http.client.connect",
         "urllib.Request"}

def hook(event, args):
    if event in WATCH:
        os.write(2, f"TAG {os.getpid()} {event} {args!r:.200}\n".encode())

sys.addaudithook(hook)

import numpy as np
import edgemed_runtime as rt

cfg = json.loads(sys.argv[1])
x = np.load(cfg["inputs"])
runs = {}
for case in cfg["cases"]:
    with rt.open(case["bundle"], trust=cfg["trust"], device_key=cfg["device_key"],
                 state_dir=cfg["state_dir"], options={"threads": 1}) as sess:
        for i in range(cfg["calls"]):
            p = sess.predict(x[i % len(x)])
            assert p.shape == (1, 2) and np.isfinite(p).all()
        runs[case["name"]] = cfg["calls"]
print(json.dumps({"runs": runs}))
'''.replace("TAG", AUDIT_TAG)

# (name, chain, backend): every model format a backend opens on the device
CASES = [
    ("ort-onnx", [], "onnxruntime"),
    ("ov-ir", [("quantize_openvino", {})], "openvino"),
    ("ov-onnx", [], "openvino"),  # ONNX bytes through ov.convert_model
]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, run_chain: Any,
          val_data: Any) -> dict[str, Any]:
    """Sealed bundles (one per installed case), the keys, the inputs, and the child script."""
    from edgemed.bundle import Recipient, SealOptions, generate_keypair, seal

    cases = [c for c in CASES if backend_class(c[2]).is_available()]
    if not cases:
        pytest.skip("no runtime backend installed")
    root = tmp_path_factory.mktemp("no_side_effects")
    pub = generate_keypair(root / "keys", kind="publisher", name="publisher")
    dev = generate_keypair(root / "keys", kind="device", name="device")
    bundles = []
    for i, (name, chain, backend) in enumerate(cases):
        art = run_chain(chain).evolve(backend=backend)
        out = seal(art, root / "bundles" / name, publisher_key=pub.private_path,
                   options=SealOptions(family=f"nse{i}", release=1),
                   recipients=[Recipient.load(dev.public_path)])
        bundles.append({"name": name, "bundle": str(out)})
    np.save(root / "inputs.npy", val_data.x[:16].astype(np.float32))
    script = root / "child.py"
    script.write_text(CHILD)
    return {"root": root, "cases": bundles, "trust": str(pub.public_path),
            "device_key": str(dev.private_path), "inputs": str(root / "inputs.npy"),
            "script": script}


def _run_child(world: dict[str, Any], tmp_path: Path,
               prefix: list[str] | None = None) -> tuple[subprocess.CompletedProcess[str], Path]:
    """Run the child with empty HOME / TMPDIR / cwd; returns the process and HOME."""
    home, tmp, cwd = tmp_path / "home", tmp_path / "tmp", tmp_path / "cwd"
    for d in (home, tmp, cwd):
        d.mkdir()
    env = {k: v for k, v in os.environ.items()
           if k not in ("CI", "TF_BUILD", "JENKINS_URL", "ORT_DISABLE_TELEMETRY",
                        "EDGEMED_STATE_DIR") and not k.startswith("XDG_")}
    env.update(HOME=str(home), TMPDIR=str(tmp), PYTHONDONTWRITEBYTECODE="1")
    cfg = {"cases": world["cases"], "trust": world["trust"], "device_key": world["device_key"],
           "state_dir": str(home / "state"), "inputs": world["inputs"], "calls": CALLS}
    proc = subprocess.run([*(prefix or []), sys.executable, str(world["script"]), json.dumps(cfg)],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    return proc, home


def _files(root: Path, skip: Path | None = None) -> list[str]:
    """Every file and folder under ``root`` (relative), ``skip`` and what is in it left out."""
    out = []
    for p in sorted(root.rglob("*")):
        if skip is not None and (p == skip or skip in p.parents):
            continue
        out.append(str(p.relative_to(root)))
    return out


def _assert_quiet(proc: subprocess.CompletedProcess[str], home: Path, tmp_path: Path,
                  world: dict[str, Any]) -> None:
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = json.loads(proc.stdout.strip().splitlines()[-1])["runs"]
    assert runs == {c["name"]: CALLS for c in world["cases"]}
    events = [ln for ln in proc.stderr.splitlines() if ln.startswith(AUDIT_TAG)]
    assert events == [], "network / process events:\n" + "\n".join(events[:20])
    assert _files(home, skip=home / "state") == [], "files written under HOME"
    assert _files(tmp_path / "tmp") == [] and _files(tmp_path / "cwd") == []


def test_open_and_run_write_and_send_nothing(world: dict[str, Any], tmp_path: Path) -> None:
    proc, home = _run_child(world, tmp_path)
    _assert_quiet(proc, home, tmp_path, world)


def test_no_native_connect_or_process(world: dict[str, Any], tmp_path: Path) -> None:
    """The same run under strace: no connect() from any thread or library, no new process."""
    strace = shutil.which("strace")
    if strace is None:
        pytest.skip("strace is not installed (the audit-hook test covers Python-level calls)")
    log = tmp_path / "strace.txt"
    proc, home = _run_child(world, tmp_path, [
        strace, "-f", "-qq", "--seccomp-bpf", "-o", str(log),
        "-e", "trace=connect,execve,execveat,fork,vfork,clone,clone3"])
    if proc.returncode != 0 and "ptrace" in proc.stderr.lower():
        pytest.skip(f"strace cannot trace here: {proc.stderr.strip()[:200]}")
    _assert_quiet(proc, home, tmp_path, world)
    calls = [ln for ln in log.read_text().splitlines() if "resumed>" not in ln]
    bad = [ln for ln in calls
           if " connect(" in ln or " fork(" in ln or " vfork(" in ln
           or ((" clone(" in ln or " clone3(" in ln) and "CLONE_THREAD" not in ln)]
    execs = [ln for ln in calls if " execve" in ln]
    assert bad == [] and len(execs) == 1, "\n".join((bad + execs)[:20])
