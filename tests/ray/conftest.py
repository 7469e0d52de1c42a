"""A real local Ray cluster (head + two device nodes via ``edgemed-run agent``) and a real
PostgreSQL, both on this machine, both stopped after the session.

Ray's temp files, its auth token (token auth is on) and HOME stay in the fixture's folder; the
nodes are ``ray start --block`` processes stopped by their pid (never ``ray stop``, which would
stop every Ray on the machine). PostgreSQL is Debian's ``postgres``, started by ``pg_ctl`` as
the unprivileged user ``nobody`` when the tests run as root, on 127.0.0.1, in a temporary data
directory.
"""

from __future__ import annotations

import atexit
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

# Ray reads its auth settings when it is imported: the token and temp folder are set up here,
# before the first import of ray in this process (the fixture removes the folder after)
FOLDER = Path(tempfile.mkdtemp(prefix="edgemed-ray-"))
TOKEN = FOLDER / "auth_token"
TOKEN.write_text(secrets.token_hex(32))
RAY_ENV = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(TOKEN),
           "RAY_TMPDIR": str(FOLDER / "tmp"), "RAY_USAGE_STATS_ENABLED": "0",
           # a node joining a loaded 2-core machine can take longer than Ray's default 10 s to
           # register ("The current node timed out during startup", seen in CI)
           "RAY_raylet_start_wait_time_s": "60"}
os.environ.update(RAY_ENV)
atexit.register(shutil.rmtree, FOLDER, True)

pytest.importorskip("ray", reason="the edgemed[ray] extra is not installed")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class RayCluster:
    address: str
    env: dict[str, str]
    folder: Path
    keys: dict[str, Path]
    procs: list[subprocess.Popen] = field(default_factory=list)
    agents: dict[str, dict] = field(default_factory=dict)
    started: dict[str, tuple[subprocess.Popen, list[str]]] = field(default_factory=dict)


def _wait_nodes(cl: "RayCluster", n: int, timeout: float, restarts: int = 2) -> None:
    """Wait for ``n`` live nodes; an agent whose ``ray start`` gave up (its process exited) is
    started again, at most ``restarts`` times in all."""
    import ray

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sum(1 for x in ray.nodes() if x["Alive"]) >= n:
            return
        for device_id, (proc, only) in list(cl.started.items()):
            if proc.poll() is not None and restarts > 0:
                restarts -= 1
                _agent(cl, device_id, only)
        time.sleep(1)
    raise RuntimeError(f"the local Ray cluster did not reach {n} nodes in {timeout} s")


def _keys(folder: Path) -> dict[str, Path]:
    from edgemed.bundle import generate_keypair

    pub = generate_keypair(folder, kind="publisher", name="publisher")
    dev = generate_keypair(folder, kind="device", name="fleet")
    return {"publisher": pub.private_path, "publisher_pub": pub.public_path,
            "device": dev.private_path, "device_pub": dev.public_path}


def _agent(cl: RayCluster, device_id: str, only: list[str]) -> None:
    cmd = [str(BIN / "edgemed-run"), "agent", "--ray", cl.address, "--targets",
           str(ROOT / "targets"), "--device-id", device_id, "--num-cpus", "1",
           "--device-key", str(cl.keys["device"]), "--trust", str(cl.keys["publisher_pub"]),
           "--node-ip", "127.0.0.1", *[a for t in only for a in ("--only", t)]]
    log = open(cl.folder / f"agent-{device_id}.log", "ab")
    p = subprocess.Popen(cmd, env=cl.env, stdout=subprocess.PIPE, stderr=log)
    cl.procs.append(p)
    cl.started[device_id] = (p, only)
    assert p.stdout is not None
    cl.agents[device_id] = json.loads(p.stdout.readline())


def _stop(procs: list[subprocess.Popen]) -> None:
    for p in reversed(procs):
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in reversed(procs):
        try:
            p.wait(timeout=60)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[RayCluster]:
    """Head (1 CPU, no target) + device ``dev-a`` (cpu-x86 and openvino-cpu) + device
    ``dev-b`` (cpu-x86 only), one CPU each; the test process is connected as a driver."""
    folder = FOLDER
    (folder / "home").mkdir(exist_ok=True)
    env = {**os.environ, **RAY_ENV, "HOME": str(folder / "home"), "ORT_DISABLE_TELEMETRY": "1",
           "CI": "true"}
    port = free_port()
    cl = RayCluster(address=f"127.0.0.1:{port}", env=env, folder=folder, keys=_keys(folder))
    try:
        head = [str(BIN / "ray"), "start", "--head", "--block", f"--port={port}",
                "--node-ip-address=127.0.0.1", "--num-cpus=1", f"--temp-dir={folder / 'tmp'}",
                "--include-dashboard=false", "--disable-usage-stats"]
        cl.procs.append(subprocess.Popen(head, env=env, stdout=subprocess.DEVNULL,
                                         stderr=open(folder / "head.log", "wb")))
        from edgemed.distributed import connect

        deadline = time.monotonic() + 180
        while True:
            try:
                connect(cl.address)
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(2)
        _agent(cl, "dev-a", ["cpu-x86", "openvino-cpu"])
        _agent(cl, "dev-b", ["cpu-x86"])
        _wait_nodes(cl, 3, 240)
        yield cl
    finally:
        import ray

        ray.shutdown()
        _stop(cl.procs)
        shutil.rmtree(folder, ignore_errors=True)


@dataclass
class Postgres:
    url: str
    folder: Path


def _as_user(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", "nobody", "--", *cmd] if os.geteuid() == 0 else cmd


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """A PostgreSQL server on 127.0.0.1 in a temporary data directory (trust auth on loopback)."""
    debian = sorted(Path("/usr/lib/postgresql").glob("*/bin"))  # not on PATH on Debian
    pg_ctl = shutil.which("pg_ctl") or (str(debian[-1] / "pg_ctl") if debian else "")
    initdb = shutil.which("initdb") or (str(debian[-1] / "initdb") if debian else "")
    if not pg_ctl or not Path(pg_ctl).exists():
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql)")
    folder = Path(tempfile.mkdtemp(prefix="edgemed-pg-"))
    folder.chmod(0o755)
    if os.geteuid() == 0:
        shutil.chown(folder, "nobody")
    data, port = folder / "data", free_port()
    subprocess.run(_as_user([initdb, "-D", str(data), "-U", "edgemed", "--auth=trust",
                             "-E", "UTF8"]), check=True, capture_output=True)
    opts = f"-h 127.0.0.1 -p {port} -k {folder}"
    subprocess.run(_as_user([pg_ctl, "-D", str(data), "-o", opts, "-l", str(folder / "pg.log"),
                             "-w", "start"]), check=True, capture_output=True)
    try:
        yield Postgres(url=f"postgresql+psycopg2://edgemed@127.0.0.1:{port}/postgres",
                       folder=folder)
    finally:
        subprocess.run(_as_user([pg_ctl, "-D", str(data), "-m", "fast", "-w", "stop"]),
                       capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)
