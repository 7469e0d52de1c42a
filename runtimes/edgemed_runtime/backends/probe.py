"""Open and run one model in a child process, so a backend that crashes (a segfault inside a
native library) is reported instead of taking the caller down.

    python -m edgemed_runtime.backends.probe REQUEST.json

REQUEST.json: ``{"artifact": Artifact.to_dict(), "path": dir, "backend": name, "options": {...},
"input": path.npy, "output": path.npy}``. The child writes the first output to ``output`` and
prints one JSON line: ``{"ok": true, "shape": [...], "finite": bool, "details": {...}}`` or
``{"ok": false, "error": {...}}`` (exit 3).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ..artifact import Artifact
from ..errors import BackendError, EdgemedError


def _child(request_path: str) -> int:
    from ..api import open_artifact

    req = json.loads(Path(request_path).read_text())
    try:
        art = Artifact.from_dict(req["artifact"], req["path"])
        x = np.load(req["input"], allow_pickle=False)
        with open_artifact(art, backend=req["backend"], options=req["options"]) as sess:
            out = sess.run({art.io.input_name: x})[art.io.output_names[0]]
            details = sess.details
        np.save(req["output"], np.asarray(out), allow_pickle=False)
        print(json.dumps({"ok": True, "shape": list(out.shape),
                          "finite": bool(np.isfinite(out).all()), "details": details},
                         default=str))
        return 0
    except EdgemedError as exc:
        print(json.dumps({"ok": False, "error": exc.to_dict()}))
        return 3


def probe(art: Artifact, backend: str, options: Mapping[str, Any], x: np.ndarray, *,
          timeout: float = 600.0) -> tuple[dict[str, Any], np.ndarray]:
    """Open ``art`` with ``backend`` in a child process and run it on ``x``.

    Returns:
        (the child's report, its first output).
    Raises:
        BackendError: the child crashed (code ``backend-crashed``), timed out, or failed to
            open/run the model (the child's error, re-raised).
    """
    with tempfile.TemporaryDirectory(prefix="edgemed-probe-") as tmp:
        t = Path(tmp)
        np.save(t / "x.npy", np.ascontiguousarray(x), allow_pickle=False)
        req = {"artifact": art.to_dict(), "path": str(art.path), "backend": backend,
               "options": {k: v for k, v in options.items() if _jsonable(v)},
               "input": str(t / "x.npy"), "output": str(t / "y.npy")}
        (t / "req.json").write_text(json.dumps(req))
        try:
            proc = subprocess.run([sys.executable, "-m", __name__, str(t / "req.json")],
                                  capture_output=True, text=True, timeout=timeout,
                                  env={**os.environ, "PYTHONFAULTHANDLER": "1"})
        except subprocess.TimeoutExpired:
            raise BackendError(f"backend {backend!r} did not finish loading/running the model",
                               expected=f"done within {timeout:.0f} s", found="timeout",
                               code="backend-timeout") from None
        if proc.returncode < 0:
            sig = signal.Signals(-proc.returncode).name
            raise BackendError(
                f"backend {backend!r} crashed on this model ({art.format})",
                expected="the model to load and run", found=f"child process killed by {sig}: "
                + _last_line(proc.stderr), code="backend-crashed",
                fix="use another variant (backend / format) for this model",
            )
        last = (proc.stdout.strip().splitlines() or [""])[-1]
        try:
            report = json.loads(last)
        except json.JSONDecodeError:
            raise BackendError(f"backend {backend!r} failed on this model",
                               found=f"exit {proc.returncode}: " + _last_line(proc.stderr),
                               code="backend-crashed") from None
        if not report.get("ok"):
            e = report.get("error", {})
            raise BackendError(e.get("message", "backend failed"), expected=e.get("expected"),
                               found=e.get("found"), fix=e.get("fix"),
                               code=e.get("code") or "backend-error")
        return report, np.load(t / "y.npy", allow_pickle=False)


def _jsonable(v: Any) -> bool:
    try:
        json.dumps(v)
        return True
    except (TypeError, ValueError):
        return False


def _last_line(text: str) -> str:
    lines = [ln for ln in (text or "").strip().splitlines() if ln.strip()]
    return lines[-1][:300] if lines else "(no output)"


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1]))
