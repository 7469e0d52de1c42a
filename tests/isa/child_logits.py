"""Run artifacts through edgemed_runtime (numpy + onnxruntime only, no torch) and save logits.

``python child_logits.py OUT.npz INPUTS.npy NAME=ARTIFACT_DIR[,X.npy] ...``: for every
artifact (or plain ``.onnx`` file, fed ``X.npy`` when given), the outputs with this CPU's fused
integer kernels (``host``) and with Q/DQ simulated in float (``simulated``), plus the CPU
features numpy detected (``cpu``). Run natively and under
``qemu-x86_64 -cpu Haswell`` (an AVX2-only CPU without VNNI) by ``test_isa.py``.
"""

from __future__ import annotations

import json
import os
import sys

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

import numpy as np  # noqa: E402

from edgemed_runtime.api import open_artifact  # noqa: E402
from edgemed_runtime.artifact import Artifact  # noqa: E402


def main(argv: list[str]) -> None:
    out, inputs, pairs = argv[0], argv[1], argv[2:]
    x = np.load(inputs)
    res: dict[str, np.ndarray] = {}
    for pair in pairs:
        name, spec = pair.split("=", 1)
        path, _, own = spec.partition(",")
        for mode, level in (("host", "all"), ("simulated", "disable")):
            res[f"{name}/{mode}"] = _outputs(path, np.load(own) if own else x, level)
    feats = np._core._multiarray_umath.__cpu_features__
    res["cpu"] = np.frombuffer(json.dumps(
        {k: bool(v) for k, v in feats.items() if k.startswith(("AVX", "FMA"))}).encode(), np.uint8)
    np.savez(out, **res)


def _outputs(path: str, x: np.ndarray, level: str) -> np.ndarray:
    if path.endswith(".onnx"):  # a bare model: onnxruntime with the backend's session options
        import onnxruntime as ort

        from edgemed_runtime.backends.onnxruntime import session_options

        so = session_options({"threads": 1, "graph_optimization": level})
        s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        return s.run(None, {s.get_inputs()[0].name: x})[0]
    art = Artifact.load(path)
    with open_artifact(art, backend="onnxruntime",
                       options={"threads": 1, "graph_optimization": level}) as s:
        return np.concatenate([s.run({art.io.input_name: x[i:i + 1]})[art.io.output_names[0]]
                               for i in range(len(x))])


if __name__ == "__main__":
    main(sys.argv[1:])
