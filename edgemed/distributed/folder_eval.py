"""``edgemed evaluate``: a model's classification metrics (with CIs) on a labelled DICOM folder,
and with a reference model the accuracy gate, the logits from this process or from Ray Data.

The folder is listed on the driver (labels.csv or class sub-folders, as ``edgemed build`` reads
them) without decoding an image; the logits come from ``logits_local`` or, with an address,
``logits_on_ray`` (decoding in the workers): the same per-file calls, so the same numbers.
Files without a DICOM suffix that are no DICOM image are skipped (counted), as the build does.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgemed_runtime import PreprocessSpec

from ..errors import InvalidInputError
from ..evaluate import GateConfig, GateResult, check_labels, clinical_report, run_gate
from .cluster import connect
from .data_eval import _model_path, _open, logits_local, logits_on_ray


@dataclass
class Evaluation:
    """What ``evaluate_folder`` measured: the model's report, the reference's and the gate."""

    model: str
    data: str
    class_names: tuple[str, ...]
    n: int
    skipped: int
    report: dict[str, Any]
    engine: dict[str, Any]
    reference_report: dict[str, Any] | None = None
    gate: GateResult | None = None
    gate_rule: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        """0, or 1 (gate-failed) when a reference was given and the gate refused the model."""
        from edgemed_runtime.sdk import ExitCode

        failed = self.gate is not None and not self.gate.passed
        return int(ExitCode.GATE_FAILED if failed else ExitCode.OK)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "edgemed-evaluation", "model": self.model, "data": self.data,
                "class_names": list(self.class_names), "n": self.n, "skipped": self.skipped,
                "metrics": self.report, "reference_metrics": self.reference_report,
                "gate": self.gate.to_dict() if self.gate is not None else None,
                "gate_rule": self.gate_rule or None, "engine": self.engine,
                "exit_code": self.exit_code}


def _class_names(model: Path, preprocess: PreprocessSpec | None,
                 open_args: dict[str, Any]) -> tuple[tuple[str, ...], str]:
    """The model's class names (empty for a plain ONNX file) and its task name."""
    with _open(model, preprocess.to_dict() if preprocess else None, 1, open_args) as sess:
        return tuple(sess.io.labels or ()), sess.task.name


def _logits(model: Path, files: list[Path], address: str | None, kw: dict[str, Any]
            ) -> np.ndarray:
    if address is not None:
        return logits_on_ray(model, files, **kw)
    kw = {k: v for k, v in kw.items() if k not in ("actors", "batch_size")}
    return logits_local(model, files, **kw)


def evaluate_folder(model: str | os.PathLike[str], data: str | os.PathLike[str], *,
                    reference: str | os.PathLike[str] | None = None, address: str | None = None,
                    actors: int = 2, threads: int = 1, preprocess: PreprocessSpec | None = None,
                    open_args: dict[str, Any] | None = None, cfg: GateConfig | None = None
                    ) -> Evaluation:
    """Metrics with bootstrap CIs of ``model`` on the labelled folder ``data``; with
    ``reference`` (the FP32 model) also the gate (``run_gate``: non-inferiority with CIs).

    ``address`` (``host:port`` or ``auto``): logits through Ray Data on that cluster; None:
    in this process. ``preprocess`` applies to plain ONNX files (artifacts carry theirs).
    Raises:
        InvalidInputError: a missing model (``not-found``), an empty or unlabelled folder
            (``empty``, ``needs-labels``), one class only, a non-classification model
            (``bad-task``), class names that do not match the outputs (``label-mismatch``),
            an unreachable cluster (``ray-unreachable``), an unreadable file (named).
    """
    from edgemed_runtime.sdk import softmax

    from ..dicom.folder import labelled_files

    cfg, args = cfg or GateConfig(), dict(open_args or {})
    m = _model_path(model)
    ref = _model_path(reference) if reference is not None else None
    names, task = _class_names(m, preprocess, args)
    if task != "classification":
        raise InvalidInputError("edgemed evaluate measures classification models",
                                expected="a classification model", found=f"a {task} model",
                                code="bad-task", fix="evaluate segmentation with edgemed build's "
                                "gate or edgemed.segmentation")
    files, y, names = labelled_files(data, names or None)
    if address is not None:
        connect(address)
    kw: dict[str, Any] = {"preprocess": preprocess, "threads": threads, "open_args": args,
                          "actors": actors, "batch_size": 32}
    lg = _logits(m, list(files), address, kw)
    if lg.shape[1] != len(names):
        raise InvalidInputError("the class names do not match the model's outputs",
                                expected=f"{lg.shape[1]} classes", found=f"{len(names)}: "
                                f"{', '.join(names)}", code="label-mismatch",
                                fix="name the classes in labels.csv / sub-folders as the model")
    keep = ~np.isnan(lg).any(axis=1)
    y, lg = y[keep], lg[keep]
    check_labels(y, len(names))
    engine = {"ray": address, "actors": actors if address is not None else None,
              "threads": threads}
    report = clinical_report(softmax(lg.astype(np.float64)), y, names,
                             n_bootstrap=cfg.bootstrap, confidence=cfg.confidence,
                             seed=cfg.bootstrap_seed)
    out = Evaluation(model=m.name, data=Path(data).name, class_names=names, n=int(len(y)),
                     skipped=int((~keep).sum()), report=report, engine=engine)
    if ref is not None:
        ref_lg = _logits(ref, list(files), address, kw)[keep]
        out.reference_report = clinical_report(
            softmax(ref_lg.astype(np.float64)), y, names, n_bootstrap=cfg.bootstrap,
            confidence=cfg.confidence, seed=cfg.bootstrap_seed)
        out.gate = run_gate(ref_lg, lg, y, cfg)
        out.gate_rule = cfg.describe(True)
    return out
