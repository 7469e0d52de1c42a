"""The Pass abstraction and its registry.

A pass takes an Artifact and returns a new one in ``workdir`` with its own provenance fields.
It declares the formats it ``accepts`` and the one it ``produces`` (checked when a target
profile loads), and a pydantic ``Config`` (unknown keys rejected; ``Pass[ItsConfig]`` types
``self.config``). Passes know nothing about targets or the CLI; what they need
from the build (calibration data, the reference model, seeds) comes in a BuildContext.
"""

from __future__ import annotations

import importlib
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Generic, Mapping, TypeVar, cast

import numpy as np
from pydantic import ValidationError

from edgemed_runtime import Artifact

from .._config import Strict, validation_problems
from ..errors import ProfileError


class PassConfig(Strict):
    """Base of every pass config: frozen, unknown keys rejected."""


C = TypeVar("C", bound=PassConfig)
PassOutput = tuple[Artifact, dict[str, Any]]
"""What ``Pass.run`` returns: the new artifact and the pass's own provenance fields."""


@dataclass
class BuildContext:
    """What passes may need from the build.

    Attributes:
        calibration: calibration inputs (N, C, H, W) float32, or None.
        calibration_info: count / seed / sha256 of the calibration set (for provenance).
        seed: the build's seed.
        threads: threads to use when a pass measures or runs models.
        host_matches_target: whether timings on this host stand for the target.
        progress: ``progress(message)`` callback for long steps.
        extras: free-form data passes share (e.g. the train set for recovery fine-tuning).
    """

    calibration: np.ndarray | None = None
    calibration_info: Mapping[str, Any] = field(default_factory=dict)
    seed: int = 0
    threads: int = 2
    host_matches_target: bool = False
    progress: Callable[[str], None] = lambda msg: None
    extras: dict[str, Any] = field(default_factory=dict)


def require_calibration(ctx: BuildContext, what: str = "INT8 quantization") -> np.ndarray:
    """The calibration inputs of ``ctx``; CalibrationError when there are none."""
    from ..errors import CalibrationError

    if ctx.calibration is None or len(ctx.calibration) == 0:
        raise CalibrationError(
            f"{what} needs calibration data", expected="at least 1 sample", found="none",
            fix="pass --calib DIR (DICOM folder, .npy/.npz) or calibration=...",
        )
    return ctx.calibration


class Pass(ABC, Generic[C]):
    """One transformation of an artifact (export, quantize, prune...), configured by a ``C``."""

    name: ClassVar[str]
    Config: ClassVar[type[PassConfig]] = PassConfig
    accepts: ClassVar[tuple[str, ...]]
    produces: ClassVar[str]
    #: pip packages the pass needs beyond edgemed's core, and their import names
    requires: ClassVar[tuple[str, ...]] = ()
    modules: ClassVar[tuple[str, ...]] = ()
    config: C

    @classmethod
    def missing(cls) -> list[str]:
        """The pip packages of ``requires`` that are not installed."""
        import importlib.util

        return [p for p, m in zip(cls.requires, cls.modules) if importlib.util.find_spec(m) is None]

    def __init__(self, config: C | Mapping[str, Any] | None = None) -> None:
        if isinstance(config, PassConfig):
            self.config = config
        else:
            self.config = cast(C, make_config(self.name, type(self).Config, dict(config or {})))

    @abstractmethod
    def run(self, artifact: Artifact, workdir: Path, ctx: BuildContext) -> PassOutput:
        """Transform ``artifact``; write new files under ``workdir``; return the new artifact
        and this run's provenance fields (measurements, counts)."""

    def __call__(self, artifact: Artifact, workdir: Path, ctx: BuildContext) -> Artifact:
        """Run the pass and append its provenance record (name, config, seconds, tools)."""
        t0 = time.perf_counter()
        out, extra = self.run(artifact, workdir, ctx)
        record = {
            "pass": self.name,
            "config": self.config.model_dump(mode="json"),
            "seconds": round(time.perf_counter() - t0, 3),
            "tools": self.tool_versions(),
            **extra,
        }
        return out.with_record(record)

    def tool_versions(self) -> dict[str, str]:
        """Versions of the libraries this pass used (for provenance)."""
        return {}


def make_config(name: str, cls: type[PassConfig], values: Mapping[str, Any]) -> PassConfig:
    """Validate ``values`` into ``cls``; raise ProfileError naming the pass and the bad keys."""
    try:
        return cls(**values)
    except ValidationError as exc:
        raise ProfileError(
            f"invalid settings for pass {name!r}",
            expected=", ".join(cls.model_fields) or "no settings",
            found=validation_problems(exc, "(config)"),
            fix="fix the pass settings in the target profile",
        ) from None


# name -> "module:Class"; modules import their heavy libraries inside run()
_REGISTRY: dict[str, str] = {
    "export_onnx": "edgemed.passes.export_onnx:ExportOnnx",
    "quantize_onnxruntime": "edgemed.passes.quantize.onnxruntime:QuantizeOnnxRuntime",
    "quantize_openvino": "edgemed.passes.quantize.openvino:QuantizeOpenVino",
    "quantize_openvino_ac": "edgemed.passes.quantize.openvino_ac:QuantizeOpenVinoAccuracy",
    "convert_openvino": "edgemed.passes.convert_openvino:ConvertOpenVino",
    "subpixel_deconv": "edgemed.passes.subpixel_deconv:SubpixelDeconv",
    "ort_format": "edgemed.passes.ort_format:OrtFormat",
    "executorch_xnnpack": "edgemed.passes.executorch:ExecuTorchXnnpack",
    "litert": "edgemed.passes.litert:LiteRtConvert",
    "fp16": "edgemed.passes.fp16:Fp16",
    "tensorrt_recipe": "edgemed.passes.tensorrt:TensorRtRecipePass",
    "prune_unstructured": "edgemed.passes.prune_unstructured:PruneUnstructured",
    "prune_structured": "edgemed.passes.prune_structured:PruneStructured",
    "cluster_weights": "edgemed.passes.cluster:ClusterWeights",
    "finetune": "edgemed.passes.finetune:Finetune",
    "qat": "edgemed.passes.qat:QuantizationAwareTraining",
}


def register_pass(name: str, target: str) -> None:
    """Register a pass class by ``"module:Class"``."""
    _REGISTRY[name] = target


def pass_names() -> list[str]:
    """Names of every registered pass."""
    return sorted(_REGISTRY)


def get_pass_class(name: str) -> type[Pass]:
    """The pass class registered as ``name``; ProfileError if unknown."""
    if name not in _REGISTRY:
        raise ProfileError(
            "unknown pass", expected=", ".join(pass_names()), found=name,
            fix="use one of the registered passes (edgemed targets show lists them)",
            code="unknown-pass",
        )
    mod, cls = _REGISTRY[name].split(":")
    return getattr(importlib.import_module(mod), cls)
