"""quantize_openvino_ac: ONNX -> INT8 OpenVINO IR with NNCF's accuracy-controlled quantization,
the segmentation model's mean Dice as the metric.

``nncf.quantize_with_accuracy_control`` quantizes like ``quantize_openvino`` (same options), then
measures the metric on the validation series for the FP32 and the INT8 model; while the drop
exceeds ``max_drop`` it ranks the quantized layers by their contribution to the drop and reverts
the worst to FP32, one per iteration (at most ``max_iterations``). The metric
(``edgemed.segmentation.accuracy_control``) runs each case through the device pipeline
(VolumeSpec, sliding window, labels on the original grid) and scores mean Dice over the labels:
against the masks when the build's validation series have them, else against the FP32 model's
labels (agreement); the record says which. The validation series are the ones the build's
segmentation gate uses (``ctx.extras["segmentation_cases"]``, set by the pipeline), so the
candidate is tuned on the gate's data: the gate still judges it, like every other candidate.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from edgemed_runtime import Artifact

from ...errors import CalibrationError
from ..base import BuildContext, Pass, PassOutput
from .openvino import (OpenVinoQuantizeConfig, QuantizeOpenVino, calibration_items, convert,
                       fake_quantize_count, ir_output, nncf_errors, nncf_options,
                       save_packed)

CASES_KEY = "segmentation_cases"
"""``BuildContext.extras`` key of the build's segmentation evaluator (volumes, truths, labels)."""


class OpenVinoAccuracyControlConfig(OpenVinoQuantizeConfig):
    #: the largest mean-Dice drop NNCF may leave (absolute, or relative to FP32's Dice)
    max_drop: float = Field(0.01, gt=0.0, le=1.0)
    drop_type: Literal["absolute", "relative"] = "absolute"
    #: at most this many layers reverted to FP32 (NNCF's max_num_iterations); when they do not
    #: bring the drop under max_drop the model is returned anyway (``max_drop_met`` false) and
    #: the gate judges it like any candidate
    max_iterations: int = Field(16, ge=0)
    #: cases used to rank layers (None: NNCF's default)
    ranking_subset_size: int | None = Field(None, ge=1)


def segmentation_cases(ctx: BuildContext) -> Any:
    """The build's segmentation validation cases (``.volumes``, ``.truths``, ``.label_names``).

    Raises:
        CalibrationError: ``empty`` (no validation series reached the pass).
    """
    cases = ctx.extras.get(CASES_KEY)
    if cases is None or not getattr(cases, "volumes", None):
        raise CalibrationError(
            "accuracy-controlled quantization needs validation series",
            expected="a segmentation build with validation series (masks for Dice against ground "
                     "truth, or none: agreement with FP32)",
            found="no validation series", code="empty",
            fix="build a segmentation model with validation=SERIES_FOLDER, or use "
                "quantize_openvino")
    return cases


class QuantizeOpenVinoAccuracy(QuantizeOpenVino):
    """ONNX FP32 -> OpenVINO IR INT8 (NNCF PTQ with accuracy control on mean Dice)."""

    name = "quantize_openvino_ac"
    Config = OpenVinoAccuracyControlConfig  # type: ignore[assignment]
    config: OpenVinoAccuracyControlConfig

    def run(self, artifact: Artifact, workdir: Path, ctx: BuildContext) -> PassOutput:
        from ..._openvino import no_telemetry

        no_telemetry()
        import nncf

        from ...segmentation.accuracy_control import dice_validation

        cfg = self.config
        cases = segmentation_cases(ctx)
        items, out = calibration_items(ctx), ir_output(workdir)
        with nncf_errors():
            model = convert(artifact)
            fp32 = None if cases.truths is not None else _compiled(model)
            val = dice_validation(artifact, cases.volumes, cases.truths, len(cases.label_names),
                                  fp32)
            kw = nncf_options(cfg, len(items))
            q = nncf.quantize_with_accuracy_control(
                model, nncf.Dataset(items), nncf.Dataset(list(range(len(val.batches)))), val,
                max_drop=cfg.max_drop, drop_type=getattr(nncf.DropType, cfg.drop_type.upper()),
                preset=kw["preset"], target_device=kw["target_device"],
                subset_size=kw["subset_size"], fast_bias_correction=kw["fast_bias_correction"],
                model_type=kw["model_type"], ignored_scope=kw["ignored_scope"],
                advanced_quantization_parameters=kw["advanced_parameters"],
                advanced_accuracy_restorer_parameters=nncf.AdvancedAccuracyRestorerParameters(
                    max_num_iterations=cfg.max_iterations,
                    ranking_subset_size=cfg.ranking_subset_size))
            dice = {"fp32": val(_compiled(model), range(len(val.batches)))[0],
                    "int8": val(_compiled(q), range(len(val.batches)))[0]}
            size = save_packed(q, out)
        record = {"calibration_samples": kw["subset_size"], "fake_quantize_nodes":
                  fake_quantize_count(q), "bytes": size, "metric": "mean Dice",
                  "dice_against": val.reference, "validation_cases": len(val.batches),
                  "max_drop": cfg.max_drop, "drop_type": cfg.drop_type,
                  "dice_fp32": round(dice["fp32"], 6), "dice_int8": round(dice["int8"], 6),
                  "dice_drop": round(_drop(dice, cfg.drop_type), 6),
                  "max_drop_met": _drop(dice, cfg.drop_type) <= cfg.max_drop,
                  "validations": len(val.calls)}
        return artifact.evolve(path=out.parent, model_file=out.name, format="openvino-ir"), record


def _compiled(model: Any) -> Any:
    """``model`` compiled for the CPU in f32 (as NNCF's accuracy control compiles it)."""
    import openvino as ov

    return ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})


def _drop(dice: dict[str, float], drop_type: str) -> float:
    """FP32 minus INT8 mean Dice, absolute or relative to FP32 (NNCF's ``DropType``)."""
    d = dice["fp32"] - dice["int8"]
    return d if drop_type == "absolute" else d / max(abs(dice["fp32"]), 1e-12)
