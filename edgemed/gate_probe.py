"""How the build checks one candidate variant before gating it.

``gate_backend``: the backend the accuracy gate runs the candidate with: its own when it is
installed here, else the variant's declared ``gate_backend`` (a TensorRT recipe's ONNX run by
onnxruntime on a build host without a GPU). ``probe_candidate``: open and run the candidate once
in a child process, so a backend that crashes on a model (seen here: OpenVINO's ``read_model`` on
ORT's QDQ DenseNet-121) fails that candidate with the reason instead of killing the build.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from edgemed_runtime import Artifact, EdgemedError
from edgemed_runtime.sdk import backend_class, probe

from .evaluate import GateResult
from .targets import Variant


def gate_backend(variant: Variant) -> tuple[str, str]:
    """(backend to gate with, why)."""
    if backend_class(variant.backend).is_available() or not variant.gate_backend:
        return variant.backend, "the variant's own backend"
    return variant.gate_backend, (f"{variant.backend} is not installed on the build host; gated "
                                  f"with {variant.gate_backend} running the same model file")


def probe_candidate(art: Artifact, backend: str, options: Mapping[str, Any], x: np.ndarray,
                    labelled: bool) -> GateResult | None:
    """None when the candidate loads and runs in a child process; else a failed GateResult
    whose reason says what happened (crash signal, timeout, load error)."""
    try:
        report, out = probe(art, backend, options, x)
    except EdgemedError as exc:
        reason = f"{backend} cannot run it [{exc.code}]: {exc.message}" + (
            f" ({exc.found})" if exc.found else "")
        return GateResult(passed=False, labelled=labelled, reference={}, candidate={},
                          agreement={}, reasons=(reason,))
    if not report.get("finite", False):
        return GateResult(passed=False, labelled=labelled, reference={}, candidate={},
                          agreement={}, reasons=(f"{backend} returned NaN or Inf",))
    return None
