"""``edgemed-run agent``: join a Ray cluster as a device, and the work a device does there.

The agent reads the target profiles' ``[host]`` rules (TOML files, the same rules the SDK's
``edgemed.targets.host_matches`` applies), declares one Ray custom resource ``target:<name>``
per profile this device matches, and runs ``ray start --address ... --block`` with them. The
device's key, publisher key and device id go into the environment of the Ray node (its worker
processes inherit it), so a bundle sent to the device is decrypted there with a key that never
crosses the network.

The functions below the agent (``device_info``, ``time_onnx``, ``bench_bundle``) are the tasks
the SDK schedules on device nodes (``edgemed.distributed``); they import nothing but the runtime
and onnxruntime, so a device needs no torch and no SDK. Results carry no PHI: device id, CPU,
versions and timings only.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .errors import InvalidInputError, MissingDependencyError

RESOURCE_PREFIX = "target:"
ENV_DEVICE_ID = "EDGEMED_DEVICE_ID"
ENV_DEVICE_KEY = "EDGEMED_DEVICE_KEY"
ENV_TRUST = "EDGEMED_TRUST"
ENV_TARGETS = "EDGEMED_TARGETS"


def resource_name(target: str) -> str:
    """The Ray custom resource a device matching ``target`` carries (``target:<name>``)."""
    return f"{RESOURCE_PREFIX}{target}"


def cpu_flags() -> frozenset[str]:
    """This device's CPU feature flags (Linux /proc/cpuinfo; empty elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_model() -> str:
    """The CPU's model name (``platform.processor()`` where /proc/cpuinfo has none)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def host_rule_matches(host: dict[str, Any], *, arch: str, flags: frozenset[str],
                      gpu: bool) -> tuple[bool, str]:
    """Whether a device (``arch``, CPU ``flags``, ``gpu`` present) satisfies a profile's
    ``[host]`` table (arch, cpu_flags_any, cpu_flags_all, needs_gpu), and why (not)."""
    archs = list(host.get("arch", []))
    if archs and arch not in archs:
        return False, f"arch {arch} is not one of {', '.join(archs)}"
    need_all = set(host.get("cpu_flags_all", []))
    if need_all and not need_all <= flags:
        return False, f"lacks CPU flags {', '.join(sorted(need_all - flags))}"
    need_any = set(host.get("cpu_flags_any", []))
    if need_any and not need_any & flags:
        return False, f"has none of the CPU flags {', '.join(sorted(need_any))}"
    if host.get("needs_gpu") and not gpu:
        return False, "needs an NVIDIA GPU (no /proc/driver/nvidia)"
    return True, f"{arch} matches ({', '.join(sorted(need_any & flags)) or 'no flag rules'})"


def profile_dirs(extra: Sequence[str | os.PathLike[str]] = ()) -> list[Path]:
    """Where the agent looks for profiles: ``extra``, then $EDGEMED_TARGETS (os.pathsep list)."""
    dirs = [Path(d) for d in extra]
    env = os.environ.get(ENV_TARGETS)
    if env:
        dirs += [Path(d) for d in env.split(os.pathsep) if d]
    return dirs


def matching_targets(dirs: Sequence[Path], *, only: Sequence[str] = ()) -> dict[str, str]:
    """``{target name: why}`` for every profile in ``dirs`` whose host rules this device
    matches (restricted to ``only`` when given).

    Raises:
        InvalidInputError: no profile folder, a profile that is not TOML, or an ``only`` name
            with no profile (code ``agent-no-profiles`` / ``bad-profile``).
    """
    import tomllib

    files = {f.stem: f for d in reversed(list(dirs)) if d.is_dir() for f in sorted(d.glob("*.toml"))}
    if not files:
        raise InvalidInputError("no target profiles found", expected="a folder of *.toml target "
                                "profiles", found=", ".join(map(str, dirs)) or "no folder given",
                                fix="pass --targets DIR (the SDK's targets/ folder)",
                                code="agent-no-profiles")
    unknown = sorted(set(only) - set(files))
    if unknown:
        raise InvalidInputError("unknown target", expected=", ".join(sorted(files)),
                                found=", ".join(unknown), code="agent-no-profiles")
    flags, gpu, out = cpu_flags(), Path("/proc/driver/nvidia").exists(), {}
    for name, f in sorted(files.items()):
        if only and name not in only:
            continue
        try:
            host = tomllib.loads(f.read_text()).get("host", {})
        except (tomllib.TOMLDecodeError, OSError) as exc:
            raise InvalidInputError("target profile is not valid TOML", found=f"{f.name}: {exc}",
                                    code="agent-bad-profile") from None
        ok, why = host_rule_matches(host, arch=platform.machine(), flags=flags, gpu=gpu)
        if ok:
            out[name] = why
    return out


def ray_start_command(address: str, resources: dict[str, float], *, num_cpus: int | None = None,
                      temp_dir: str | None = None, node_ip: str | None = None) -> list[str]:
    """The ``ray start`` command line that joins ``address`` with ``resources`` (blocking)."""
    ray = shutil.which("ray", path=os.pathsep.join([str(Path(sys.executable).parent),
                                                   os.environ.get("PATH", "")]))
    if ray is None:
        raise MissingDependencyError("Ray is not installed", expected="the ray CLI",
                                     found="no 'ray' on PATH",
                                     fix="pip install 'edgemed-runtime[ray]'", code="missing-ray")
    cmd = [ray, "start", f"--address={address}", f"--resources={json.dumps(resources)}",
           "--block", "--disable-usage-stats"]
    if num_cpus is not None:
        cmd.append(f"--num-cpus={num_cpus}")
    if temp_dir:
        cmd.append(f"--temp-dir={temp_dir}")
    if node_ip:
        cmd.append(f"--node-ip-address={node_ip}")
    return cmd


def agent_env(*, device_id: str | None, device_key: str | None, trust: str | None) -> dict[str, str]:
    """The Ray node's environment: this one plus the device's id and key paths (absolute)."""
    env = dict(os.environ)
    env[ENV_DEVICE_ID] = device_id or platform.node() or "device"
    for var, value in ((ENV_DEVICE_KEY, device_key), (ENV_TRUST, trust)):
        if value:
            if not Path(value).is_file():
                raise InvalidInputError("key file not found", found=str(value), code="not-found")
            env[var] = str(Path(value).resolve())
    return env


def run_agent(args: Any) -> int:
    """``edgemed-run agent``: declare the matched targets and run the Ray node until SIGTERM
    (``--dry-run``: print what would be declared). Returns the exit code of ``ray start``."""
    targets = matching_targets(profile_dirs(args.targets or ()), only=args.only or ())
    resources = {resource_name(t): float(args.slots) for t in targets}
    env = agent_env(device_id=args.device_id, device_key=args.device_key, trust=args.trust)
    cmd = ray_start_command(args.ray, resources, num_cpus=args.num_cpus, temp_dir=args.temp_dir,
                            node_ip=args.node_ip)
    report = {"ok": True, "device_id": env[ENV_DEVICE_ID], "targets": targets,
              "resources": resources, "address": args.ray}
    sys.stdout.write(json.dumps(report) + "\n")
    sys.stdout.flush()
    if args.dry_run:
        return 0
    proc = subprocess.Popen(cmd, env=env)

    def stop(signum: int, frame: Any) -> None:
        proc.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.send_signal(signal.SIGTERM)
        return proc.wait()


def add_agent_parser(sub: Any) -> None:
    """Add the ``agent`` sub-command to ``edgemed-run``'s argparse sub-parsers."""
    a = sub.add_parser("agent", help="join a Ray cluster as a device carrying target:<name> "
                       "resources for the target profiles this device matches")
    a.add_argument("--ray", required=True, metavar="ADDRESS", help="the cluster's head, host:port")
    a.add_argument("--targets", action="append", metavar="DIR",
                   help="folder of target profiles (repeat; also $EDGEMED_TARGETS)")
    a.add_argument("--only", action="append", metavar="NAME",
                   help="declare only these targets (still checked against the host rules)")
    a.add_argument("--slots", type=int, default=1,
                   help="measurements at a time per target (default 1: timings never overlap)")
    a.add_argument("--device-id", dest="device_id", help="this device's id (default: host name)")
    a.add_argument("--device-key", dest="device_key", help="device private key (fleet bench)")
    a.add_argument("--trust", help="publisher public key (fleet bench)")
    a.add_argument("--num-cpus", dest="num_cpus", type=int, help="CPUs offered to Ray")
    a.add_argument("--temp-dir", dest="temp_dir", help="Ray's temp folder on this device")
    a.add_argument("--node-ip", dest="node_ip", help="this device's address in the cluster")
    a.add_argument("--dry-run", dest="dry_run", action="store_true",
                   help="print the resources and exit")


# ---- the tasks a device runs (scheduled by edgemed.distributed) ----

def _versions() -> dict[str, str]:
    from importlib import metadata

    from . import __version__

    out = {"python": platform.python_version(), "edgemed-runtime": __version__}
    for dist in ("onnxruntime", "openvino", "numpy", "ray"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out


def _peak_rss_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def device_info() -> dict[str, Any]:
    """This device: id (from the agent), Ray node id, CPU model, ISA flags, arch, versions."""
    isa = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm")
    node_id = None
    try:
        import ray

        node_id = ray.get_runtime_context().get_node_id()
    except Exception:  # not inside a Ray worker
        pass
    return {"device_id": os.environ.get(ENV_DEVICE_ID, platform.node()), "node_id": node_id,
            "cpu": cpu_model(), "arch": platform.machine(),
            "isa": sorted(set(isa) & cpu_flags()), "cores": os.cpu_count(),
            "versions": _versions()}


def _percentiles(samples: list[float]) -> dict[str, float]:
    a = np.asarray(samples) * 1e3
    return {"p50_ms": float(np.percentile(a, 50)), "p99_ms": float(np.percentile(a, 99)),
            "mean_ms": float(a.mean()), "runs": int(a.size)}


def _time(call: Any, runs: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        call()
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        call()
        out.append(time.perf_counter() - t0)
    return out


def time_onnx(models: dict[str, bytes], x: np.ndarray, *, threads: int = 1, runs: int = 20,
              warmup: int = 3) -> dict[str, Any]:
    """Time every ONNX model of ``models`` on ``x`` with onnxruntime, interleaved in turns
    (so a busy moment hits all alike). Returns ``{"latency": {name: p50/p99...}, "device": ...}``."""
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    import onnxruntime as ort

    calls = {}
    for name, blob in models.items():
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.log_severity_level = 3
        s = ort.InferenceSession(blob, so, providers=["CPUExecutionProvider"])
        feed = {s.get_inputs()[0].name: x}
        calls[name] = (lambda s=s, feed=feed: s.run(None, feed))
    samples: dict[str, list[float]] = {n: [] for n in calls}
    for c in calls.values():
        _time(c, 0, warmup)
    block = max(1, runs // 5)
    while min(len(v) for v in samples.values()) < runs:
        for n, c in calls.items():
            samples[n] += _time(c, block, 0)
    return {"latency": {n: _percentiles(v[:runs]) for n, v in samples.items()},
            "device": device_info()}


def _bundle_input(sess: Any) -> np.ndarray:
    shape = [d if isinstance(d, int) and d > 0 else 1 for d in sess.inputs[0].shape]
    return np.random.default_rng(0).standard_normal(shape).astype(np.float32)


def bench_bundle(bundle: bytes, *, runs: int = 50, warmup: int = 5, threads: int | None = None,
                 trust: str | None = None, device_key: str | None = None) -> dict[str, Any]:
    """Open an (encrypted) bundle on this device with its own key ($EDGEMED_DEVICE_KEY unless
    ``device_key``) and time batch-1 inference on a fixed random input.

    Returns ``{"device": device_info(), "p50_ms", "p99_ms", "mean_ms", "runs", "open_s",
    "peak_rss_mb", "backend"}`` (no PHI: the input is synthetic).
    Raises:
        InvalidInputError: no device key on this device (code ``no-device-key``); BundleError
            when the bundle does not verify here.
    """
    from .api import open as open_model

    key = device_key or os.environ.get(ENV_DEVICE_KEY)
    pub = trust or os.environ.get(ENV_TRUST)
    if not key:
        raise InvalidInputError("this device has no device key", expected="edgemed-run agent "
                                "--device-key KEY", found=f"${ENV_DEVICE_KEY} unset",
                                code="no-device-key")
    with tempfile.TemporaryDirectory(prefix="edgemed-fleet-") as tmp:
        path = Path(tmp) / "model.edgemed"
        path.write_bytes(bundle)
        kw: dict[str, Any] = {"device_key": key, "state_dir": str(Path(tmp) / "state")}
        if pub:
            kw["trust"] = pub
        t0 = time.perf_counter()
        with open_model(path, options={"threads": threads} if threads else None, **kw) as sess:
            open_s = time.perf_counter() - t0
            x = _bundle_input(sess)
            stats = _percentiles(_time(lambda: sess.logits(x), runs, warmup))
            backend = sess.backend
    return {"device": device_info(), **stats, "open_s": open_s,
            "peak_rss_mb": _peak_rss_mb(), "backend": backend}
