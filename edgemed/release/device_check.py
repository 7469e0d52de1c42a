"""Open a bundle as a device would: a fresh process of the device environment (only the runtime
and the extra the bundle declares installed; torch, onnx and nncf made unimportable as well), the
device key, a fresh rollback state; run it on one DICOM file."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any

from ..errors import BundleError

BLOCKED = ("torch", "onnx", "nncf", "onnxscript", "monai", "torch_pruning", "edgemed")
"""What a device does not have: the build side's heavy libraries and the SDK itself."""


def import_blocker(blocked: tuple[str, ...] = BLOCKED) -> str:
    """Python source that, run first in a fresh interpreter, makes the top-level packages
    ``blocked`` unimportable (ImportError) and binds ``BLOCKED`` to them: the one import blocker,
    shared by the device check and the tests' torch-free (or decoder-free) proofs."""
    return textwrap.dedent(
        f"""
        import importlib.abc, sys
        BLOCKED = {tuple(blocked)!r}

        class _Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in BLOCKED:
                    raise ImportError(name + " is not available on the device")
                return None

        sys.meta_path.insert(0, _Block())
        """
    )


_SCRIPT = import_blocker() + textwrap.dedent(
    """
    import json
    import edgemed_runtime as rt
    try:
        with rt.open({bundle!r}, trust={trust!r}, device_key={key!r}, state_dir={state!r}) as s:
            probs = s.predict({dicom!r})[0].tolist()
            out = {{"ok": True, "backend": s.backend, "probabilities": probs,
                   "labels": list(s.labels)}}
    except rt.EdgemedError as exc:
        out = {{"ok": False, "error": exc.to_dict()}}
    out["leaked_modules"] = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
    print(json.dumps(out))
    """
)


_SEG_SCRIPT = import_blocker() + textwrap.dedent(
    """
    import json
    import edgemed_runtime as rt
    try:
        with rt.open({bundle!r}, trust={trust!r}, device_key={key!r}, state_dir={state!r}) as s:
            r = s.predict({dicom!r})
            rt.write_seg({seg!r}, r.labels, r.source, label_names=r.label_names,
                         algorithm=("edgemed", "1"))
            out = {{"ok": True, "backend": s.backend, "seg": {seg!r},
                   "labels": list(r.label_names), "shape": list(r.labels.shape)}}
    except rt.EdgemedError as exc:
        out = {{"ok": False, "error": exc.to_dict()}}
    out["leaked_modules"] = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
    print(json.dumps(out))
    """
)


def verify_seg_as_device(bundle: Path, trust: Path, device_key: Path, series: Path, seg: Path,
                         timeout: float = 600.0, *, python: Path | None = None) -> dict[str, Any]:
    """A segmentation bundle as a device runs it: predict on the series folder ``series`` and
    write the DICOM SEG to ``seg``; ``{"ok", "backend", "seg", "labels", "shape", ...}``.
    Raises BundleError (timeout, crash) as ``verify_as_device``."""
    return _run(_SEG_SCRIPT, dict(bundle=str(bundle), trust=str(trust), key=str(device_key),
                                  dicom=str(series), seg=str(seg)), timeout, python)


def verify_as_device(bundle: Path, trust: Path, device_key: Path, dicom: Path,
                     timeout: float = 300.0, *, python: Path | None = None) -> dict[str, Any]:
    """Run the check with interpreter ``python`` (default: this one; the release passes the
    device environment's, edgemed.release.device_env); return ``{"ok", "backend",
    "probabilities", ...}`` or raise BundleError."""
    return _run(_SCRIPT, dict(bundle=str(bundle), trust=str(trust), key=str(device_key),
                              dicom=str(dicom)), timeout, python)


def _run(script: str, fields: dict[str, str], timeout: float, python: Path | None
         ) -> dict[str, Any]:
    """Run ``script`` (formatted with ``fields`` and a fresh ``state``) in a fresh process."""
    with tempfile.TemporaryDirectory(prefix="edgemed-device-state-") as state:
        code = script.format(state=state, **fields)
        try:
            r = subprocess.run([str(python or sys.executable), "-c", code], capture_output=True,
                               text=True, timeout=timeout, cwd=tempfile.gettempdir())
        except subprocess.TimeoutExpired:
            raise BundleError("the device check timed out", found=f"{timeout:.0f} s",
                              code="device-check-timeout") from None
    lines = r.stdout.strip().splitlines()
    if r.returncode != 0 or not lines:
        raise BundleError("the device check crashed", found=(r.stderr or r.stdout)[-600:],
                          fix="run `edgemed-run` on the bundle to see the failure",
                          code="device-check-crashed")
    return json.loads(lines[-1])
