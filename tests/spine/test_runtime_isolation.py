"""The device runtime imports and runs a model with torch, onnx and nncf made unimportable."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from edgemed.release.device_check import import_blocker

BLOCKER = import_blocker()


def test_runtime_runs_without_torch_onnx_nncf(tiny_artifact, synthetic_dir: Path) -> None:  # type: ignore[no-untyped-def]
    dcm = sorted(synthetic_dir.rglob("*.dcm"))[0]
    code = BLOCKER + textwrap.dedent(
        f"""
        import json
        try:
            import torch  # noqa: F401
            raise SystemExit("torch was importable")
        except ImportError:
            pass
        import edgemed_runtime as rt
        with rt.open({str(tiny_artifact.path)!r}) as s:
            probs = s.predict({str(dcm)!r})
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
        print(json.dumps({{"probs": probs.tolist(), "loaded": loaded, "backend": s.backend}}))
        """
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["loaded"] == [] and out["backend"] == tiny_artifact.backend
    import edgemed_runtime as rt

    with rt.open(tiny_artifact.path) as s:
        expected = s.predict(str(dcm)).tolist()
    assert out["probs"] == expected  # same arrays in the isolated process


def test_import_edgemed_runtime_is_light() -> None:
    code = ("import sys, edgemed_runtime; heavy = [m for m in ('torch', 'onnx', 'onnxruntime', "
            "'openvino', 'tensorrt', 'pydicom', 'cryptography') if m in sys.modules]; print(heavy)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stdout + r.stderr


def test_no_telemetry_files_written(tiny_artifact, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    code = (f"import edgemed_runtime as rt, numpy as np; s = rt.open({str(tiny_artifact.path)!r}); "
            "s.run({'input': np.zeros((1, 1, 16, 16), np.float32)})")
    env = {"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                       env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert [p for p in tmp_path.rglob("*")] == [], "the runtime wrote files under HOME / cwd"
