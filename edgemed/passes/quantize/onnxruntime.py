"""quantize_onnxruntime: ONNX -> INT8 QDQ ONNX with onnxruntime's static quantizer.

``quant_pre_process`` (shape inference + graph optimisation) first, then ``quantize_static`` with
per-channel weights and the calibration method given: ``minmax``, or activation clipping by
``percentile`` or ``entropy`` (KL divergence over a 2048-bin histogram). Standalone
BatchNormalization nodes become depthwise 1x1 Convs first (``batchnorm.py``: DenseNet-121 INT8
0.83x -> 0.45x of FP32). Activation and weight types are explicit, never the library default:
which one is fastest depends on the CPU (on AVX-512 VNNI x86, U8S8 ran 3.3x faster than S8S8 for
MONAI ResNet-18), so target profiles list candidates and the build times them.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from edgemed_runtime import Artifact

from ...errors import CalibrationError, ExportError
from ..base import BuildContext, Pass, PassConfig, PassOutput, require_calibration


class QuantizeConfig(PassConfig):
    activation_type: Literal["uint8", "int8"] = "uint8"
    weight_type: Literal["int8", "uint8"] = "int8"
    per_channel: bool = True
    calibration: Literal["minmax", "percentile", "entropy"] = "minmax"
    percentile: float = Field(99.999, gt=90, le=100)
    histogram_bins: int = Field(2048, ge=128)
    reduce_range: bool = False
    symmetric_activations: bool = False  # TensorRT needs int8 activations with zero point 0
    keep_fp32_nodes: tuple[str, ...] = ()
    keep_fp32_op_types: tuple[str, ...] = ()
    pre_process: bool = True
    compact_names: bool = True
    max_calibration_samples: int = Field(128, ge=1)
    #: standalone BatchNormalization (pre-activation nets): as a depthwise 1x1 Conv, or as is
    batchnorm: Literal["conv", "keep"] = "conv"
    #: False: Conv/Gemm biases stay float (onnxruntime quantizes them when it fuses QLinearConv)
    quantize_bias: bool = True


def _reader(name: str, data: np.ndarray, batch: int = 8) -> Any:
    from onnxruntime.quantization import CalibrationDataReader

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(range(0, len(data), batch))

        def get_next(self) -> dict[str, np.ndarray] | None:
            i = next(self._it, None)
            return None if i is None else {name: data[i : i + batch]}

        def rewind(self) -> None:
            self._it = iter(range(0, len(data), batch))

    return _Reader()


class QuantizeOnnxRuntime(Pass[QuantizeConfig]):
    """ONNX FP32 -> ONNX QDQ INT8 (static, calibrated)."""

    name = "quantize_onnxruntime"
    Config = QuantizeConfig
    accepts = ("onnx",)
    produces = "onnx-qdq"

    def tool_versions(self) -> dict[str, str]:
        import onnxruntime

        return {"onnxruntime": onnxruntime.__version__}

    def run(self, artifact: Artifact, workdir: Path, ctx: BuildContext) -> PassOutput:
        from onnxruntime.quantization import (
            CalibrationMethod,
            QuantFormat,
            QuantType,
            quantize_static,
        )
        from onnxruntime.quantization.shape_inference import quant_pre_process

        cfg = self.config
        require_calibration(ctx)
        workdir = Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        src = artifact.model_path
        pre = workdir / "model.pre.onnx"
        out = workdir / "model.int8.onnx"
        tmp_out = workdir / ".model.int8.onnx.tmp"
        calib = ctx.calibration[: cfg.max_calibration_samples].astype(np.float32)
        types = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}
        methods = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
                   "entropy": CalibrationMethod.Entropy}
        extra: dict[str, Any] = {}
        if cfg.symmetric_activations:
            extra["ActivationSymmetric"] = True
        if not cfg.quantize_bias:
            extra["QuantizeBias"] = False
        exclude = list(cfg.keep_fp32_nodes)
        try:
            logging.getLogger("onnxruntime").setLevel(logging.ERROR)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model_in = src
                if cfg.pre_process:
                    # no symbolic shape inference for dynamic spatial dims (it cannot resolve them)
                    quant_pre_process(str(src), str(pre), skip_symbolic_shape=artifact.io.dynamic_spatial)
                    model_in = pre
                bn_converted = 0
                if cfg.batchnorm != "keep":
                    bn_converted, model_in = _batchnorm_to_conv(model_in, workdir / "model.bn.onnx")
                if cfg.keep_fp32_op_types:
                    exclude += _nodes_of_types(model_in, cfg.keep_fp32_op_types)
                cache = None
                if cfg.calibration != "minmax":
                    cache = _histogram_ranges(model_in, workdir, artifact.io.input_name, calib, cfg,
                                              methods[cfg.calibration])
                quantize_static(
                    str(model_in), str(tmp_out), _reader(artifact.io.input_name, calib),
                    quant_format=QuantFormat.QDQ, per_channel=cfg.per_channel,
                    reduce_range=cfg.reduce_range,
                    activation_type=types[cfg.activation_type], weight_type=types[cfg.weight_type],
                    calibrate_method=methods[cfg.calibration], nodes_to_exclude=exclude or None,
                    extra_options=extra, calibration_cache_path=cache,
                )
        except (CalibrationError, ExportError):
            raise
        except Exception as exc:
            tmp_out.unlink(missing_ok=True)
            raise ExportError(
                "onnxruntime quantization failed", found=f"{type(exc).__name__}: {exc}"[:500],
                fix="try calibration='minmax', pre_process=false, or keep the failing nodes in FP32",
                code="quantize-failed",
            ) from None
        finally:
            for name in ("model.bn.onnx", "calibration_ranges.json", "augmented.onnx"):
                (workdir / name).unlink(missing_ok=True)
            pre.unlink(missing_ok=True)
        import onnx

        from ..onnx_names import compact_names
        from .zero_points import drop_zero_points

        model = onnx.load(str(tmp_out))
        zero_points = drop_zero_points(model)
        if cfg.compact_names:
            model = compact_names(model)
        onnx.save(model, str(tmp_out))
        tmp_out.replace(out)
        return artifact.evolve(path=workdir, model_file=out.name, format="onnx-qdq"), {
            "calibration_samples": int(len(calib)), "batchnorm_to_depthwise_conv": bn_converted,
            "zero_points_dropped": zero_points}


def _histogram_ranges(model: Path, workdir: Path, input_name: str, calib: np.ndarray,
                      cfg: QuantizeConfig, method: Any) -> Path:
    """Histogram calibration with ``cfg.histogram_bins`` bins; return a ranges cache file.

    ``quantize_static`` cannot pass the bin count through: its entropy default (128 bins, 128
    quantized bins) leaves the KL search one candidate, i.e. plain min/max. So the ranges are
    computed here with ``create_calibrator`` and handed over as a calibration cache.
    """
    from onnxruntime.quantization.calibrate import create_calibrator, save_tensors_data

    options: dict[str, Any] = {"num_bins": cfg.histogram_bins}
    if cfg.calibration == "entropy":
        options["num_quantized_bins"] = 128
    else:
        options["percentile"] = cfg.percentile
    calibrator = create_calibrator(model, None, augmented_model_path=str(workdir / "augmented.onnx"),
                                   calibrate_method=method, extra_options=options)
    calibrator.collect_data(_reader(input_name, calib))
    cache = workdir / "calibration_ranges.json"
    save_tensors_data(calibrator.compute_data(), cache)
    return cache


def _batchnorm_to_conv(model: Path, out: Path) -> tuple[int, Path]:
    """``batchnorm.batchnorm_to_conv`` on ``model``: (how many BNs, the model to quantize:
    ``out`` when something changed, else ``model``)."""
    import onnx

    from .batchnorm import batchnorm_to_conv

    m = onnx.load(str(model))
    if not any(n.op_type == "BatchNormalization" for n in m.graph.node):
        return 0, model
    if not any(vi.name for vi in m.graph.value_info):  # ranks needed: infer shapes when absent
        m = onnx.shape_inference.infer_shapes(m)
    n = batchnorm_to_conv(m)
    if n:
        onnx.save(m, str(out))
    return n, (out if n else model)


def _nodes_of_types(model_path: Path, op_types: tuple[str, ...]) -> list[str]:
    import onnx

    m = onnx.load(str(model_path), load_external_data=False)
    return [n.name for n in m.graph.node if n.op_type in op_types]
