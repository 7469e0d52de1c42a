"""edgemed-run agent: host rules -> target:<name> resources (no cluster needed)."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from edgemed_runtime.agent import host_rule_matches, matching_targets, resource_name
from edgemed_runtime.errors import InvalidInputError

ROOT = Path(__file__).resolve().parents[2]


def test_host_rules() -> None:
    rule = {"arch": ["x86_64"], "cpu_flags_any": ["avx2", "avx512_vnni"]}
    assert host_rule_matches(rule, arch="x86_64", flags=frozenset({"avx2"}), gpu=False)[0]
    ok, why = host_rule_matches(rule, arch="aarch64", flags=frozenset({"avx2"}), gpu=False)
    assert not ok and "aarch64" in why
    assert not host_rule_matches(rule, arch="x86_64", flags=frozenset({"sse4_2"}), gpu=False)[0]
    assert not host_rule_matches({"cpu_flags_all": ["avx2", "fma"]}, arch="x86_64",
                                 flags=frozenset({"avx2"}), gpu=False)[0]
    assert not host_rule_matches({"needs_gpu": True}, arch="x86_64", flags=frozenset(),
                                 gpu=False)[0]
    assert resource_name("cpu-x86") == "target:cpu-x86"


def test_agent_agrees_with_the_sdk_host_rules() -> None:
    from edgemed.targets import host_matches, list_targets, load_target

    got = matching_targets([ROOT / "targets"])
    want = {t for t in list_targets([ROOT / "targets"]) if host_matches(load_target(t))[0]}
    assert set(got) == want
    if platform.machine() == "x86_64":
        assert "cpu-x86" in got and "cpu-arm64" not in got


def test_agent_refusals(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError) as e:
        matching_targets([tmp_path])
    assert e.value.code == "agent-no-profiles"
    with pytest.raises(InvalidInputError) as e:
        matching_targets([ROOT / "targets"], only=["no-such-target"])
    assert e.value.code == "agent-no-profiles"
    (tmp_path / "bad.toml").write_text("[host\narch = 1")
    with pytest.raises(InvalidInputError) as e:
        matching_targets([tmp_path])
    assert e.value.code == "agent-bad-profile"


def test_agent_dry_run_cli() -> None:
    out = subprocess.run([sys.executable, "-m", "edgemed_runtime", "agent", "--ray", "127.0.0.1:1",
                          "--targets", str(ROOT / "targets"), "--only", "cpu-x86",
                          "--device-id", "d1", "--dry-run"],
                         capture_output=True, text=True, check=False)
    if platform.machine() != "x86_64":
        pytest.skip("cpu-x86 host rules need x86_64")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["resources"] == {"target:cpu-x86": 1.0} and doc["device_id"] == "d1"
    bad = subprocess.run([sys.executable, "-m", "edgemed_runtime", "agent", "--ray", "x",
                          "--targets", str(ROOT / "targets"), "--only", "nope", "--json"],
                         capture_output=True, text=True, check=False)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr


def test_unreachable_cluster_fails_fast() -> None:
    import socket

    import ray

    from edgemed.distributed import connect

    if ray.is_initialized():
        pytest.skip("this process is already connected to a cluster")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    with pytest.raises(InvalidInputError) as e:
        connect(f"127.0.0.1:{port}")
    assert e.value.code == "ray-unreachable" and not ray.is_initialized()
