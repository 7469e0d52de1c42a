"""What can be benchmarked, and how a worker process opens it.

A Candidate is plain data (it crosses into fresh worker processes as JSON): an edgemed artifact
or bundle (opened through ``edgemed_runtime.open``, so a bundle's cold start includes verification
and decryption), a plain ONNX file run by onnxruntime with its defaults (the FP32 and
``quantize_static`` peers), or an OpenVINO IR (the NNCF peer). ``open_runner`` imports nothing
heavy until it is called.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import numpy as np

KINDS = ("edgemed", "onnx", "openvino-ir")
#: roles: what the candidate stands for in ratio tables
ROLES = ("edgemed", "fp32", "peer", "backend", "other")


@dataclass(frozen=True)
class Candidate:
    """One thing to time.

    Attributes:
        name: short key used in tables and JSON ("edgemed", "ort-fp32", ...).
        kind: one of KINDS.
        path: artifact directory, bundle, ``.onnx`` file or IR ``.xml``.
        role: one of ROLES.
        label: a longer description (what it is, with which settings).
        backend: for ``edgemed`` candidates: run on this backend instead of the artifact's.
        options: backend options (``threads``...).
        open_args: for bundles: ``trust``, ``device_key``... passed to ``edgemed_runtime.open``.
        precision: ``int8`` or ``fp32`` (which GEMM ceiling applies).
        gmacs: MACs per sample, in billions (None if unknown).
        size_bytes: the model file's size on disk.
        e2e: also time the end-to-end path (DICOM decode + preprocess + inference).
        imports: modules imported before the timed open (so open time is not import time).
    """

    name: str
    kind: str
    path: str
    role: str = "other"
    label: str = ""
    backend: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    open_args: dict[str, Any] = field(default_factory=dict)
    precision: str = "fp32"
    gmacs: float | None = None
    size_bytes: int | None = None
    e2e: bool = False
    imports: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Candidate":
        return cls(**{**d, "imports": tuple(d.get("imports", ()))})


@dataclass
class Runner:
    """An opened candidate: ``run(batch) -> first output``, its preprocessing, and ``close``."""

    run: Callable[[np.ndarray], np.ndarray]
    close: Callable[[], None]
    preprocess: Any = None
    dynamic_batch: bool = True


def _threads(c: Candidate) -> int:
    return int(c.options.get("threads", 0) or 0)


def open_runner(c: Candidate, preprocess: Any = None) -> Runner:
    """Open ``c`` (in the calling process). Raises the runtime's typed errors on failure."""
    if c.kind == "edgemed":
        import edgemed_runtime

        sess = edgemed_runtime.open(c.path, backend=c.backend, options=c.options or None,
                                    **c.open_args)
        name, out = sess.io.input_name, sess.io.output_names[0]
        return Runner(run=lambda x: sess.run({name: x})[out], close=sess.close,
                      preprocess=sess.preprocess, dynamic_batch=sess.io.dynamic_batch)
    if c.kind == "onnx":
        os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = _threads(c)
        so.log_severity_level = 3
        s = ort.InferenceSession(c.path, so, providers=["CPUExecutionProvider"])
        inp = s.get_inputs()[0]
        return Runner(run=lambda x: s.run(None, {inp.name: x})[0], close=lambda: None,
                      preprocess=preprocess, dynamic_batch=not isinstance(inp.shape[0], int))
    if c.kind == "openvino-ir":
        from .._openvino import no_telemetry

        no_telemetry()
        import openvino as ov

        core = ov.Core()
        cfg = {"INFERENCE_NUM_THREADS": _threads(c)} if _threads(c) else {}
        compiled = core.compile_model(c.path, "CPU", cfg)
        req = compiled.create_infer_request()
        out0 = compiled.output(0)
        dyn = compiled.input(0).get_partial_shape()[0].is_dynamic

        def run(x: np.ndarray) -> np.ndarray:
            return np.asarray(req.infer({0: x})[out0])

        return Runner(run=run, close=lambda: None, preprocess=preprocess, dynamic_batch=dyn)
    raise ValueError(f"unknown candidate kind {c.kind!r}")  # internal: kinds are ours


def preimport(c: Candidate) -> None:
    """Import the libraries ``c`` needs, so its open time is not its import time."""
    import importlib

    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    mods = list(c.imports)
    if c.kind == "openvino-ir":
        mods.append("openvino")
    elif c.kind == "onnx":
        mods.append("onnxruntime")
    else:
        mods.append("edgemed_runtime")
        if c.backend:
            from edgemed_runtime.sdk import backend_class

            mods += list(backend_class(c.backend).modules)
    for m in mods:
        importlib.import_module(m)
