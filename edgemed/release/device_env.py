"""The device's Python environment, for the release's device check: a virtual environment with
exactly ``pip install ./runtimes[extra]`` (the runtime, the extra a bundle declares and their
dependencies, from the package index this machine's pip uses) and nothing more.

One environment per requirement set, cached under ``$EDGEMED_DEVICE_ENV_CACHE`` (default
``~/.cache/edgemed/device-envs/<key>``) and reused across runs; built under a lock in a temporary
folder and renamed into place, so concurrent releases build it once and never see half of it.
When the runtime's source changes, only the runtime is reinstalled (its dependencies stay)."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import venv
from pathlib import Path
from typing import Any

from edgemed_runtime.sdk import DeviceRequirements, atomic_write_bytes

from ..errors import BundleError

RUNTIME_SRC = Path(__file__).resolve().parents[2] / "runtimes"
"""The runtime's source tree (``pip install ./runtimes``)."""
MARKER = "edgemed-device-env.json"


def cache_root() -> Path:
    """Where device environments are kept (``$EDGEMED_DEVICE_ENV_CACHE`` or the user cache)."""
    env = os.environ.get("EDGEMED_DEVICE_ENV_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "edgemed" / "device-envs"


def env_key(req: DeviceRequirements) -> str:
    """The cache key of a requirement set: extras and minimum versions (not the backend name:
    two backends with the same install share an environment)."""
    text = json.dumps(req.pip_requirements("edgemed-runtime"), sort_keys=True)
    return hashlib.sha256(f"{sys.version_info[:2]}{text}".encode()).hexdigest()[:16]


def source_hash(src: Path = RUNTIME_SRC) -> str:
    """SHA-256 of the runtime's source files (which runtime a cached environment holds); an
    SDK installed without the source tree: the runtime version it pins."""
    from edgemed_runtime.sdk import runtime_version

    if not src.is_dir():
        return f"edgemed-runtime=={runtime_version()}"
    h = hashlib.sha256()
    for p in sorted(src.rglob("*")):
        if p.is_file() and "__pycache__" not in p.parts and ".egg-info" not in str(p) \
                and "build" not in p.relative_to(src).parts[:1]:
            h.update(str(p.relative_to(src)).encode() + b"\0" + p.read_bytes())
    return h.hexdigest()


def _pip(py: Path, args: list[str], timeout: float) -> None:
    """Run pip in the environment of ``py``; raise BundleError with pip's last lines."""
    try:
        r = subprocess.run([str(py), "-m", "pip", "install", "--quiet",
                            "--disable-pip-version-check", *args],
                           capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise BundleError("building the device environment timed out", found=f"{timeout:.0f} s",
                          fix="check that pip can reach its package index, or set "
                          "release.device_check = \"host\"", code="device-env-failed") from None
    if r.returncode != 0:
        raise BundleError("cannot build the device environment (pip install failed)",
                          expected="pip install ./runtimes[extra] from the package index",
                          found=(r.stderr or r.stdout).strip()[-400:],
                          fix="check that pip can reach its package index, or set "
                          "release.device_check = \"host\"", code="device-env-failed")


def _install_runtime(py: Path, req: DeviceRequirements, timeout: float) -> None:
    """``pip install <copy of ./runtimes>[extras] <package>>=<min>...`` into ``py``'s venv (a
    copy, so the build leaves nothing in the source tree); without the source tree (an installed
    SDK), ``edgemed-runtime[extras]==<this runtime's version>`` from the index."""
    if not RUNTIME_SRC.is_dir():
        from edgemed_runtime.sdk import runtime_version

        head, *rest = req.pip_requirements()
        _pip(py, [f"{head}=={runtime_version()}", *rest], timeout)
        return
    with tempfile.TemporaryDirectory(prefix="edgemed-runtime-src-") as tmp:
        src = Path(tmp) / "runtimes"
        shutil.copytree(RUNTIME_SRC, src, ignore=shutil.ignore_patterns(
            "__pycache__", "*.egg-info", "build"))
        _pip(py, req.pip_requirements(str(src)), timeout)


def _python(env: Path) -> Path:
    return env / "bin" / "python"


def device_python(req: DeviceRequirements, *, timeout: float = 1200.0) -> Path:
    """The Python of the cached device environment for ``req`` (built on first use).

    Raises:
        BundleError: ``device-env-failed`` (pip could not install the runtime or the extra).
    """
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    key = env_key(req)
    env = root / key
    with open(root / f"{key}.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        marker = env / MARKER
        src = source_hash()
        try:
            recorded: dict[str, Any] = json.loads(marker.read_text())
        except (OSError, ValueError):
            recorded = {}
        if recorded.get("source") == src and _python(env).exists():
            return _python(env)
        if recorded.get("requires") != req.to_dict() or not _python(env).exists():
            # built in place under the lock; the marker is written last, so an interrupted
            # build has none and is rebuilt from scratch (clear=True) next time
            venv.EnvBuilder(with_pip=True, clear=True).create(env)
        else:  # same requirements, newer runtime source: reinstall the runtime only
            subprocess.run([str(_python(env)), "-m", "pip", "uninstall", "-y", "--quiet",
                            "edgemed-runtime"], capture_output=True, timeout=timeout)
        _install_runtime(_python(env), req, timeout)
        atomic_write_bytes(marker, json.dumps({"source": src, "requires": req.to_dict()},
                                              indent=1).encode())
        return _python(env)


def for_device_runtime(profile: Any, device_runtime: str) -> Any:
    """``profile`` restricted to the variants a ``device_runtime`` runs: ``"base"`` keeps those
    whose backend needs no extra (``pip install edgemed-runtime``: onnxruntime formats);
    ``"any"`` keeps all.

    Raises:
        ProfileError: ``base-runtime-unsupported`` (no variant of the profile runs there).
    """
    from edgemed_runtime.sdk import requirements_for

    from ..errors import ProfileError

    if device_runtime != "base":
        return profile
    keep = [v for v in profile.variants if not requirements_for(v.backend, versions=False).extras]
    if not keep:
        raise ProfileError(f"target {profile.name} has no variant the base device runtime runs",
                           expected="a variant with backend onnxruntime",
                           found=", ".join(f"{v.name} ({v.backend})" for v in profile.variants),
                           fix='drop device_runtime = "base" for this target, or pick a target '
                           "with onnxruntime variants", code="base-runtime-unsupported")
    names = {v.name for v in keep}
    default = profile.default_variant if profile.default_variant in names else next(
        (v.name for v in keep if v.when is None), keep[0].name)
    return profile.model_copy(update={"variants": tuple(keep), "default_variant": default})
