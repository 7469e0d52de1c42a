"""qat: quantization-aware training (torch.ao FX) exported as an INT8 QDQ ONNX model.

For targets where post-training INT8 fails the accuracy gate. Steps: fold BatchNorm into the
convolutions; ``prepare_qat_fx`` inserts fake-quantisers matching onnxruntime's INT8 scheme
(activations uint8/int8 per tensor, weights int8 symmetric per output channel); observers are
initialised on the calibration set; the model fine-tunes with fake quantisation in the loop
(edgemed.recovery, distilling from the FP32 teacher); observers are then frozen and the
fake-quantisers exported as ONNX QuantizeLinear/DequantizeLinear pairs, which onnxruntime runs
as INT8 kernels. The export is checked against the fake-quantised torch model.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from edgemed_runtime import Artifact
from edgemed_runtime.sdk import atomic_write_bytes

from ..errors import CalibrationError, ExportError
from ..recovery import FinetuneConfig
from .export_onnx import export_torch
from .base import BuildContext, Pass, PassConfig, PassOutput
from .onnx_graph import drop_unused_initializers


class QATConfig(PassConfig):
    activation_type: Literal["uint8", "int8"] = "uint8"
    epochs: int = Field(3, ge=0)
    lr: float = Field(1e-4, gt=0)
    batch_size: int = Field(32, ge=1)
    distill: float = Field(0.5, ge=0, le=1)
    patience: int = Field(3, ge=1)
    opset: int = Field(17, ge=13, le=21)
    min_cosine: float = Field(0.99, gt=0, le=1)
    #: 7-bit weights ([-64, 63]): no int16 saturation in x86 integer kernels without VNNI
    reduce_range: bool = False


def _qconfig(activation_type: str, reduce_range: bool = False) -> Any:
    import torch
    from torch.ao.quantization import (FakeQuantize, MovingAverageMinMaxObserver,
                                       MovingAveragePerChannelMinMaxObserver, QConfig)

    if activation_type == "uint8":
        act = FakeQuantize.with_args(observer=MovingAverageMinMaxObserver, quant_min=0,
                                     quant_max=255, dtype=torch.quint8,
                                     qscheme=torch.per_tensor_affine)
    else:
        act = FakeQuantize.with_args(observer=MovingAverageMinMaxObserver, quant_min=-128,
                                     quant_max=127, dtype=torch.qint8,
                                     qscheme=torch.per_tensor_affine)
    wmin, wmax = (-64, 63) if reduce_range else (-128, 127)
    weight = FakeQuantize.with_args(observer=MovingAveragePerChannelMinMaxObserver,
                                    quant_min=wmin, quant_max=wmax, dtype=torch.qint8,
                                    qscheme=torch.per_channel_symmetric, ch_axis=0)
    return QConfig(activation=act, weight=weight)


def _export_fake_quant(fq: Any) -> Any:
    """A frozen FakeQuantize as a plain module the ONNX exporter maps to Q/DQ."""
    import torch

    scale = fq.scale.detach().clone().float()
    zp = fq.zero_point.detach().clone().to(torch.int32)
    qmin, qmax, axis = int(fq.quant_min), int(fq.quant_max), int(getattr(fq, "ch_axis", 0))
    per_channel = fq.qscheme in (torch.per_channel_symmetric, torch.per_channel_affine)
    if (qmin, qmax) == (-64, 63):
        # reduce_range: ONNX export takes only the full int8 range; with the 7-bit scale the
        # weights still land in [-64, 64] (2 x 255 x 64 = 32640 fits int16: no saturation)
        qmin, qmax = -128, 127

    class _FrozenFakeQuant(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("scale", scale)
            self.register_buffer("zero_point", zp)

        def forward(self, x: Any) -> Any:
            if per_channel:
                return torch.fake_quantize_per_channel_affine(x, self.scale, self.zero_point,
                                                              axis, qmin, qmax)
            return torch.fake_quantize_per_tensor_affine(x, self.scale, self.zero_point,
                                                         qmin, qmax)

    return _FrozenFakeQuant()


def freeze_for_export(model: Any) -> Any:
    """Replace every FakeQuantize (observer off) by a frozen Q/DQ-exportable module, in place."""
    from torch.ao.quantization import FakeQuantizeBase

    for name, m in list(model.named_modules()):
        for child_name, child in list(m.named_children()):
            if isinstance(child, FakeQuantizeBase):
                setattr(m, child_name, _export_fake_quant(child))
    return model


def fold_weight_quantizers(data: bytes) -> tuple[bytes, int]:
    """Store quantised weights as INT8 initializers (QuantizeLinear of a constant removed).

    The exporter writes ``W (float) -> QuantizeLinear -> DequantizeLinear``; this computes the
    INT8 tensor once, so the file holds 1 byte a weight (as onnxruntime's own quantizer does).
    Returns (model bytes, number of weights folded).
    """
    import onnx
    from onnx import numpy_helper

    model = onnx.load_from_string(data)
    g = model.graph
    consts = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    for n in g.node:
        if n.op_type == "Constant" and n.attribute:
            consts[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
        elif n.op_type == "Identity" and n.input[0] in consts:
            consts[n.output[0]] = consts[n.input[0]]
    users: dict[str, int] = {}
    for n in g.node:
        for i in n.input:
            users[i] = users.get(i, 0) + 1
    folded, drop = 0, []
    new_inits = []
    for n in g.node:
        if n.op_type != "QuantizeLinear" or n.input[0] not in consts or len(n.input) < 3:
            continue
        if n.input[1] not in consts or n.input[2] not in consts:
            continue
        w, scale, zp = consts[n.input[0]], consts[n.input[1]], consts[n.input[2]]
        axis = next((a.i for a in n.attribute if a.name == "axis"), 1)
        if scale.ndim == 1 and scale.size > 1:
            shape = [1] * w.ndim
            shape[axis] = -1
            scale, zpb = scale.reshape(shape), zp.reshape(shape)
        else:
            zpb = zp
        info = np.iinfo(zp.dtype)
        q = np.clip(np.rint(w / scale) + zpb.astype(np.int64), info.min, info.max).astype(zp.dtype)
        new_inits.append(numpy_helper.from_array(q, n.output[0]))
        drop.append(n)
        folded += int(w.size)
    for n in drop:
        g.node.remove(n)
    g.initializer.extend(new_inits)
    drop_unused_initializers(g)
    return model.SerializeToString(), folded


def prepare_qat(model: Any, example: Any, activation_type: str = "uint8",
                reduce_range: bool = False) -> Any:
    """Fold BatchNorm, then insert fake-quantisers (torch.ao FX); returns a GraphModule."""
    from torch.ao.quantization import QConfigMapping
    from torch.ao.quantization.quantize_fx import prepare_qat_fx
    from torch.fx.experimental.optimization import fuse

    model = fuse(model.eval())
    model.train()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return prepare_qat_fx(model, QConfigMapping().set_global(_qconfig(activation_type,
                                                                           reduce_range)),
                              (example,))


class QuantizationAwareTraining(Pass[QATConfig]):
    """torch -> INT8 QDQ ONNX trained with fake quantisation."""

    name = "qat"
    Config = QATConfig
    accepts = ("torch",)
    produces = "onnx-qdq"

    def tool_versions(self) -> dict[str, str]:
        import onnx
        import torch

        return {"torch": torch.__version__, "onnx": onnx.__version__}

    def run(self, artifact: Artifact, workdir: Path, ctx: BuildContext) -> PassOutput:
        import torch
        from torch.ao.quantization import disable_observer

        from ..recovery import finetune
        from .export_onnx import check_onnx
        from .torch_common import copy_module, remember_teacher, train_arrays, val_arrays

        cfg = self.config
        if ctx.calibration is None or len(ctx.calibration) == 0:
            raise CalibrationError("QAT needs calibration data to initialise its ranges",
                                   expected="at least 1 sample", found="none",
                                   fix="pass calibration=... (or --calib)")
        model = copy_module(artifact, self.name)
        remember_teacher(ctx, artifact.payload)
        io_spec = artifact.io
        example = torch.zeros((1, *io_spec.sample_shape), dtype=torch.float32)
        try:
            qat = prepare_qat(model, example, cfg.activation_type, cfg.reduce_range)
        except Exception as exc:
            raise ExportError("the model could not be prepared for QAT (torch.fx tracing)",
                              found=f"{type(exc).__name__}: {exc}"[:400],
                              fix="remove data-dependent control flow from forward(), or use "
                              "post-training quantization", code="qat-failed") from None
        calib = torch.from_numpy(np.ascontiguousarray(ctx.calibration.astype(np.float32)))
        qat.eval()
        with torch.no_grad():
            for i in range(0, len(calib), 16):
                qat(calib[i:i + 16])
        history: dict[str, Any] = {}
        if cfg.epochs > 0:
            train, val = val_arrays(ctx, train_arrays(ctx, self.name), seed=ctx.seed)
            ctx.progress(f"{self.name}: {cfg.epochs} epochs with fake quantisation")
            res = finetune(qat, train, val, FinetuneConfig(
                epochs=cfg.epochs, full_lr=cfg.lr, batch_size=cfg.batch_size,
                distill=cfg.distill, patience=cfg.patience, seed=ctx.seed, augment=True),
                teacher=ctx.extras.get("teacher"))
            history = res.to_dict()
        qat.apply(disable_observer)
        qat.eval()
        freeze_for_export(qat)
        data, folded = fold_weight_quantizers(export_torch(qat, artifact.io, cfg.opset, code="qat-failed"))
        check_onnx(data)
        parity = self._parity(qat, data, ctx)
        if parity["cosine"] < cfg.min_cosine:
            raise ExportError("the QAT ONNX export diverges from the fake-quantised model",
                              expected=f"cosine >= {cfg.min_cosine}",
                              found=f"cosine {parity['cosine']:.5f}", code="qat-failed")
        out = Path(workdir) / "model.qat.onnx"
        atomic_write_bytes(out, data)
        record = {"parity": parity, "bytes": len(data), "int8_weights": folded,
                  **({"finetune": history} if history else {})}
        return artifact.evolve(path=Path(workdir), model_file=out.name, format="onnx-qdq",
                               payload=None), record

    def _parity(self, model: Any, data: bytes, ctx: BuildContext) -> dict[str, float]:
        import onnxruntime as ort
        import torch

        from .export_onnx import cosine

        x = np.ascontiguousarray(ctx.calibration[:8].astype(np.float32))
        so = ort.SessionOptions()
        so.intra_op_num_threads = ctx.threads
        # the export's numerics, not this host's integer kernels: Q/DQ simulated in float
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        sess = ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])
        got = sess.run(None, {sess.get_inputs()[0].name: x})[0]
        with torch.no_grad():
            ref = model(torch.from_numpy(x)).numpy()
        return {"cosine": cosine(got, ref), "max_abs_diff": float(np.max(np.abs(got - ref)))}
