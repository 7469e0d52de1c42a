"""export_onnx: torch -> ONNX (one file, opset >= 17, dynamic batch), checked for parity.

The TorchScript exporter is used (``dynamo=False``): in torch 2.13 it gives opset 17 in a single
file, while the dynamo exporter only produced opset 18 with a separate weights file. After export:
``onnx.checker``, shape inference, and a parity check against PyTorch on random and calibration
inputs (max abs diff and cosine). An ONNX source is checked and passed through.
"""

from __future__ import annotations

import io
import shutil
from dataclasses import replace
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field

from edgemed_runtime import Artifact
from edgemed_runtime.sdk import atomic_write_bytes

from ..errors import ExportError
from .base import BuildContext, Pass, PassConfig, PassOutput


class ExportConfig(PassConfig):
    opset: int = Field(17, ge=17, le=21)
    parity_atol: float = Field(1e-3, gt=0)
    parity_min_cosine: float = Field(0.9999, gt=0, le=1)
    parity_samples: int = Field(4, ge=1)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Mean cosine similarity between rows of ``a`` and ``b``."""
    a = a.reshape(len(a), -1).astype(np.float64)
    b = b.reshape(len(b), -1).astype(np.float64)
    num = (a * b).sum(1)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return float(np.mean(np.where(den > 0, num / np.maximum(den, 1e-30), 1.0)))


def second_size(spatial: tuple[int, ...]) -> tuple[int, ...]:
    """A second spatial size for the parity check of a dynamic-spatial export: each side plus
    its largest power-of-two divisor up to 32 (so strided networks still divide it evenly)."""
    return tuple(int(d + min(32, d & -d)) for d in spatial)


def dynamic_spatial_failure(module: Any, data: bytes, artifact: Artifact) -> str:
    """Why a dynamic-spatial export does not hold at a second size ('' when it does).

    Raises:
        ExportError: ``fixed-size-model``: it does not hold, and the artifact's inference would
            feed other sizes than the example's (no sliding window over that ROI).
    """
    import onnxruntime as ort
    import torch

    io = artifact.io
    shape = (1, io.sample_shape[0], *second_size(io.sample_shape[1:]))
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    try:
        with torch.no_grad():
            ref = module(torch.from_numpy(x))
        ref = (ref[0] if isinstance(ref, (tuple, list)) else ref).float().numpy()
        got = ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, {
            io.input_name: x})[0]
        why = "" if got.shape == ref.shape and cosine(got, ref) > 0.9999 else \
            "the exported graph diverges from PyTorch at another size"
    except Exception as exc:  # torch or onnxruntime refuse the other size
        why = f"the model does not run at another size ({type(exc).__name__})"
    inf = artifact.inference
    roi = tuple(inf.roi_size) if inf is not None and inf.mode == "sliding_window" else ()
    if why and roi != tuple(io.sample_shape[1:]):
        raise ExportError(
            "the model only takes its example's spatial size", expected="a sliding-window "
            f"inference spec with roi_size = {'x'.join(map(str, io.sample_shape[1:]))}",
            found=why, fix="pass inference=InferenceSpec(mode='sliding_window', roi_size=...) "
            "equal to the example input's spatial size", code="fixed-size-model")
    return why


def check_onnx(data: bytes) -> Any:
    """Run onnx.checker and shape inference; return the inferred ModelProto or raise ExportError."""
    import onnx

    try:
        model = onnx.load_from_string(data)
        onnx.checker.check_model(model, full_check=False)
        return onnx.shape_inference.infer_shapes(model, strict_mode=True)
    except Exception as exc:
        raise ExportError(
            "the ONNX model is invalid", expected="a model that passes onnx.checker",
            found=f"{type(exc).__name__}: {exc}"[:500],
        ) from None


def export_torch(module: Any, io_spec: Any, opset: int, code: str = "export-failed") -> bytes:
    """Export ``module`` with the TorchScript exporter (one file, dynamic batch); return bytes.

    Raises:
        ExportError: the model cannot be traced or exported (``code``).
    """
    import torch

    example = torch.zeros(io_spec.input_shape, dtype=torch.float32)
    dyn = {io_spec.input_name: {0: "batch"}, **{o: {0: "batch"} for o in io_spec.output_names}}
    if io_spec.dynamic_spatial:  # fully convolutional: every spatial axis dynamic, in and out
        axes = {i: f"s{i - 2}" for i in range(2, len(io_spec.input_shape))}
        dyn = {n: {0: "batch", **axes} for n in dyn}
    buf = io.BytesIO()
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module.eval(), (example,), buf, opset_version=opset, dynamo=False,
                input_names=[io_spec.input_name], output_names=list(io_spec.output_names),
                dynamic_axes=dyn if io_spec.dynamic_batch or io_spec.dynamic_spatial else None, do_constant_folding=True,
            )
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise ExportError(
            "the model could not be exported to ONNX",
            expected=f"a traceable model taking {'x'.join(map(str, io_spec.input_shape))}",
            found=f"{type(exc).__name__}: {first}"[:500],
            fix="check the input shape; replace data-dependent Python control flow or "
            "unsupported operators, or export to ONNX yourself and pass the .onnx file",
            code=code,
        ) from None
    return buf.getvalue()


class ExportOnnx(Pass[ExportConfig]):
    """torch (or ONNX) -> checked single-file ONNX."""

    name = "export_onnx"
    Config = ExportConfig
    accepts = ("torch", "onnx")
    produces = "onnx"

    def tool_versions(self) -> dict[str, str]:
        import onnx
        import torch

        return {"torch": torch.__version__, "onnx": onnx.__version__}

    def run(self, artifact: Artifact, workdir: Path, ctx: BuildContext) -> PassOutput:
        cfg = self.config
        out = Path(workdir) / "model.onnx"
        if artifact.format == "onnx":
            data = artifact.model_path.read_bytes()
            check_onnx(data)
            if artifact.model_path.resolve() != out.resolve():
                out.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(artifact.model_path, out)
            return (artifact.evolve(path=Path(workdir), model_file="model.onnx", format="onnx"),
                    {"parity": "skipped: the source is already ONNX"})
        module = artifact.payload
        data = export_torch(module, artifact.io, cfg.opset)
        fixed = ""
        if artifact.io.dynamic_spatial and (fixed := dynamic_spatial_failure(module, data, artifact)):
            # e.g. UNETR (positional embeddings), SwinUNETR (shifted-window masks traced as
            # constants): export at the ROI; sliding-window inference feeds only ROI windows
            artifact = artifact.evolve(io=replace(artifact.io, dynamic_spatial=False))
            data = export_torch(module, artifact.io, cfg.opset)
        inferred = check_onnx(data)
        graph_inputs = [i.name for i in inferred.graph.input]
        if graph_inputs != [artifact.io.input_name]:
            raise ExportError(
                "the exported graph does not take the model's input",
                expected=f"one graph input named {artifact.io.input_name!r}",
                found=f"graph inputs {graph_inputs}: the output was traced as a constant",
                fix="keep the computation in torch operations (no .numpy(), .item() or Python "
                "values derived from the input), or export to ONNX yourself",
            )
        opset = max(o.version for o in inferred.opset_import if o.domain in ("", "ai.onnx"))
        parity = self._parity(module, data, artifact, ctx, cfg)
        atomic_write_bytes(out, data)
        record: dict[str, Any] = {"opset": opset, "parity": parity, "bytes": len(data)}
        if fixed:
            record["spatial"] = f"fixed at {'x'.join(map(str, artifact.io.sample_shape[1:]))}: {fixed}"
        return (artifact.evolve(path=Path(workdir), model_file="model.onnx", format="onnx",
                                payload=None), record)

    def _parity(self, module: Any, data: bytes, artifact: Artifact, ctx: BuildContext,
                cfg: ExportConfig) -> dict[str, Any]:
        import onnxruntime as ort
        import torch

        rng = np.random.default_rng(ctx.seed)
        batch = 2 if artifact.io.dynamic_batch else artifact.io.input_shape[0]
        inputs = [("random", rng.standard_normal((batch, *artifact.io.sample_shape)).astype(np.float32))]
        if ctx.calibration is not None and len(ctx.calibration):
            inputs.append(("calibration", ctx.calibration[: cfg.parity_samples].astype(np.float32)))
        if artifact.io.dynamic_spatial:  # the parity check at a second spatial size
            inputs.append(("second size", rng.standard_normal(
                (batch, artifact.io.sample_shape[0], *second_size(artifact.io.sample_shape[1:]))
            ).astype(np.float32)))
        so = ort.SessionOptions()
        so.intra_op_num_threads = ctx.threads
        try:
            sess = ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise ExportError(
                "onnxruntime cannot load the exported model", found=f"{type(exc).__name__}: {exc}"[:500],
                fix="the model uses an operator onnxruntime lacks; export with another opset",
            ) from None
        report: dict[str, Any] = {}
        for label, x in inputs:
            with torch.no_grad():
                ref = module(torch.from_numpy(x))
            ref = ref[0] if isinstance(ref, (tuple, list)) else ref
            ref_np = ref.detach().float().numpy()
            got = sess.run(None, {sess.get_inputs()[0].name: x})[0]
            if got.shape != ref_np.shape:
                raise ExportError(
                    "ONNX output shape differs from PyTorch", expected=str(ref_np.shape),
                    found=str(got.shape), fix="check dynamic axes and the model's output",
                )
            diff = float(np.max(np.abs(got - ref_np)))
            cos = cosine(got, ref_np)
            report[label] = {"max_abs_diff": diff, "cosine": cos}
            scale = max(1.0, float(np.max(np.abs(ref_np))))
            if diff > cfg.parity_atol * scale or cos < cfg.parity_min_cosine:
                raise ExportError(
                    "ONNX output diverges from PyTorch",
                    expected=f"max abs diff <= {cfg.parity_atol * scale:.2e} and cosine >= "
                    f"{cfg.parity_min_cosine}",
                    found=f"on {label} inputs: max abs diff {diff:.3e}, cosine {cos:.6f}",
                    fix="look for operators that export differently (custom ops, in-place "
                    "randomness, train-mode layers); call model.eval() before building",
                )
        return report
