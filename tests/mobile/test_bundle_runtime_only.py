"""A sealed bundle of each mobile format (ORT format, ExecuTorch .pte, LiteRT .tflite) opens in a
runtime-only process from memory: a child interpreter where the SDK (edgemed), nncf and openvino
cannot be imported, and torch and onnx cannot either except for .pte (ExecuTorch's Python
runtime links libtorch, and its pybindings import torch and executorch.exir, which imports
onnx). An
audit hook records every file the child opens for writing: only the rollback state is written,
and no file in the bundle's folder, the state or the child's working folder holds the
plaintext model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgemed_runtime.backends import backend_class

from .conftest import litert_python

_CHILD = r"""
import json, sys
blocked = set(json.loads(sys.argv[2]))
class _Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in blocked:
            raise ImportError(f"{name} is not installed in this runtime-only test")
sys.meta_path.insert(0, _Block())
written = []
def _audit(event, args):
    # a file descriptor (an int) was opened by os.open, audited below with its path
    if event == "open" and isinstance(args[0], (str, bytes)) and isinstance(args[1], str) and \
            any(c in args[1] for c in "wax+"):
        written.append(str(args[0]))
    elif event == "os.open" and args[2] & 0o3:  # O_WRONLY / O_RDWR
        written.append(str(args[0]))
sys.addaudithook(_audit)
import numpy as np
import edgemed_runtime
cfg = json.loads(sys.argv[1])
x = np.load(cfg["input"])
with edgemed_runtime.open(cfg["bundle"], trust=cfg["trust"], device_key=cfg["device_key"],
                          state_dir=cfg["state"]) as sess:
    logits = sess.run({"input": x})["logits"]
print(json.dumps({"logits": logits.tolist(), "backend": sess.backend, "written": written,
                  "torch": "torch" in sys.modules}))
"""

_NEVER = ["edgemed", "nncf", "openvino"]
#: ExecuTorch's pip pybindings import torch and executorch.exir, which imports onnx: for .pte
#: only the SDK, nncf and openvino are blocked
FORMATS = {"ort": ("onnxruntime", _NEVER + ["torch", "onnx"]), "pte": ("executorch", _NEVER),
           "tflite": ("litert", _NEVER + ["torch", "onnx"])}


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from edgemed.bundle import generate_keypair

    d = tmp_path_factory.mktemp("keys")
    return (generate_keypair(d, kind="publisher", name="publisher"),
            generate_keypair(d, kind="device", name="phone"))


def _artifact(fmt: str, run_chain: Any, fp32_chain: Any) -> Any:
    if fmt == "ort":
        return fp32_chain([("quantize_onnxruntime", {"activation_type": "uint8",
                                                     "weight_type": "int8", "per_channel": True}),
                           ("ort_format", {"fix_batch": 1})])
    if fmt == "pte":
        return run_chain([("executorch_xnnpack", {})]).evolve(backend="executorch")
    return run_chain([("litert", {})]).evolve(backend="litert")


@pytest.fixture(scope="module")
def fp32_chain(tmp_path_factory: pytest.TempPathFactory, fp32_artifact: Any,
               build_ctx: Any) -> Any:
    """Passes applied to the FP32 ONNX export (for the ORT-format artifact)."""
    from edgemed.passes.base import get_pass_class

    def run(chain: list[tuple[str, dict[str, Any]]]) -> Any:
        art = fp32_artifact
        for name, settings in chain:
            art = get_pass_class(name)(settings)(art, tmp_path_factory.mktemp(name), build_ctx)
        return art

    return run


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_bundle_opens_runtime_only_from_memory(fmt: str, tmp_path: Path, keys: Any,
                                               run_chain: Any, fp32_chain: Any,
                                               val_data: Any) -> None:
    from edgemed.bundle import Recipient, SealOptions, seal
    from edgemed_runtime.api import open_artifact

    backend, blocked = FORMATS[fmt]
    if not backend_class(backend).is_available():
        pytest.skip(f"the {backend} extra is not installed")
    if fmt == "tflite" and litert_python() is None:
        pytest.skip("no LiteRT converter environment (.venv-litert or $EDGEMED_LITERT_PYTHON)")
    art = _artifact(fmt, run_chain, fp32_chain)
    art.save()
    publisher, device = keys
    bundle = seal(art, tmp_path / f"m-{fmt}.edgemed", publisher_key=publisher.private_path,
                  options=SealOptions(family=f"mobile-{fmt}", release=1),
                  recipients=[Recipient.load(device.public_path)])
    x = val_data.x[:1].astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    state = tmp_path / "state"
    cfg = {"bundle": str(bundle), "trust": str(publisher.public_path), "input": str(tmp_path / "x.npy"),
           "device_key": str(device.private_path), "state": str(state)}
    proc = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(cfg), json.dumps(blocked)],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert res["backend"] == backend
    assert res["torch"] == (fmt == "pte")
    outside = [p for p in res["written"] if not Path(p).resolve().is_relative_to(state.resolve())]
    assert not outside, f"files written outside the rollback state: {outside}"
    plain = art.model_path.read_bytes()
    probe = plain[len(plain) // 2: len(plain) // 2 + 64]  # 64 bytes from the model's middle
    for f in tmp_path.rglob("*"):  # the bundle, the state, the child's working folder
        if f.is_file() and f.stat().st_size >= len(probe):
            assert probe not in f.read_bytes(), f"plaintext model bytes in {f.name}"
    with open_artifact(art) as sess:
        expected = sess.run({"input": x})["logits"]
    np.testing.assert_allclose(np.asarray(res["logits"], np.float32), expected, atol=1e-5)
