"""A quick release project for the lock, interrupt and device-runtime tests: the tiny trained net,
the synthetic folder, keys, and a one-variant profile whose host rule this machine does not
match (one build, nothing timed), benchmarks off; plus running the CLI as a real process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]

QUICK = """
[model]
source = "tests.helpers.tiny_models:make_net"
weights = "tiny.pt"
input = [1, 1, 16, 16]
labels = ["no_lesion", "lesion"]

[data]
dicom = "{dicom}"
split = [0.5, 0.25, 0.25]

[preprocess]
window = [40, 400]

[release]
family = "quick-ct"
version = "0.1.0"
counter = 1
targets = ["{target}"]
out = "rel"
device_check = "{device_check}"

[gate]
max_accuracy_drop = 0.05
max_auc_drop = 0.05

[signing]
publisher_key = "keys/publisher.key"
publisher_pub = "keys/publisher.pub"
devices = ["keys/dev1.pub"]
verify_device_key = "keys/dev1.key"

[bench]
enabled = false
"""

ONE_VARIANT = """
name = "quick-x86"
kind = "cpu"
default_variant = "ort-int8-u8s8"
[host]
arch = ["riscv64"]
[[variants]]
name = "ort-int8-u8s8"
backend = "onnxruntime"
passes = [
  { pass = "export_onnx", opset = 17 },
  { pass = "quantize_onnxruntime", activation_type = "uint8", weight_type = "int8" },
]
"""


def write_project(d: Path, synthetic_dir: Path, net: torch.nn.Module, *,
                  target: str | None = None, device_check: str = "host") -> Path:
    """An edgemed.toml in ``d`` (keys, weights and the one-variant profile beside it)."""
    from edgemed.bundle import generate_keypair

    d.mkdir(parents=True, exist_ok=True)
    if not (d / "keys" / "publisher.key").exists():
        generate_keypair(d / "keys", kind="publisher", name="publisher")
        generate_keypair(d / "keys", kind="device", name="dev1")
    torch.save(net.state_dict(), d / "tiny.pt")
    (d / "quick.toml").write_text(ONE_VARIANT)
    p = d / "edgemed.toml"
    p.write_text(QUICK.format(dicom=synthetic_dir, target=target or d / "quick.toml",
                              device_check=device_check))
    return p


@pytest.fixture()
def quick_project(tmp_path: Path, synthetic_dir: Path, trained_tiny: torch.nn.Module) -> Path:
    return write_project(tmp_path / "proj", synthetic_dir, trained_tiny)


def cli(*args: str, cwd: Path | None = None, **kw: object) -> subprocess.Popen[str]:
    """``edgemed ARGS`` as a real process (its own stdout/stderr pipes; the repo importable)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "ORT_DISABLE_TELEMETRY": "1", "CI": "true"}
    return subprocess.Popen([sys.executable, "-c", "from edgemed.cli import main; main()", *args],
                            cwd=cwd or ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)  # type: ignore[call-overload]
