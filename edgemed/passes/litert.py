"""litert: a PyTorch model -> LiteRT ``.tflite`` (full INT8 with calibration, or FP32).

The conversion runs in a child process with the interpreter of an environment that has
``litert-torch`` 0.10.0: it cannot share edgemed's venv (its ``ai-edge-litert[model-utils]``
extra pins ``xdsl==0.28.0``, which needs ``typing-extensions<4.13``, older than edgemed's pin),
and the converter can crash the process (a stride-2 Conv3d segfaulted it). The parent exports
the model with ``torch.export`` at batch 1 and saves the ExportedProgram and the calibration
inputs to a private temp folder; the child (same torch, 2.13.0) loads them, quantizes with
litert-torch's ``PT2EQuantizer`` (symmetric INT8, per-channel weights, static activations),
calibrates one sample at a time, converts with ``QuantConfig(pt2e_quantizer=...)`` and writes
the flatbuffer. The model keeps float32 input and output (quantize / dequantize inside).

Which interpreter (``converter_python``): the pass's ``python`` setting, else
``$EDGEMED_LITERT_PYTHON``, else this interpreter when it can import ``litert_torch``, else
``.venv-litert/bin/python`` next to this environment's folder (``/work/main/.venv`` ->
``/work/main/.venv-litert``). Install it with
``python -m venv .venv-litert && .venv-litert/bin/pip install -r constraints-litert.txt``.

Only 2D models (``require_2d``, code ``needs-2d``), refused before the child is started.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field
from edgemed_runtime import Artifact

from edgemed_runtime.sdk import atomic_write_bytes

from ..errors import ExportError, MissingDependencyError
from .base import BuildContext, Pass, PassConfig, PassOutput, require_calibration
from .executorch import require_2d
from .torch_common import copy_module

ENV_PYTHON = "EDGEMED_LITERT_PYTHON"

#: run by the converter's interpreter: argv = [folder]; reads folder/job.json
_CHILD = r"""
import json, sys, warnings
from pathlib import Path
warnings.simplefilter("ignore")
import numpy as np, torch
folder = Path(sys.argv[1])
job = json.loads((folder / "job.json").read_text())
ep = torch.export.load(str(folder / "model.pt2"))
args = (torch.zeros(job["shape"], dtype=torch.float32),)
import litert_torch
from importlib.metadata import version
kwargs = {}
model = ep.module()
if job["quantize"]:
    from litert_torch.quantize import pt2e_quantizer as q
    from litert_torch.quantize.quant_config import QuantConfig
    from torchao.quantization.pt2e import quantize_pt2e
    quantizer = q.PT2EQuantizer().set_global(
        q.get_symmetric_quantization_config(is_per_channel=job["per_channel"], is_dynamic=False))
    model = quantize_pt2e.prepare_pt2e(model, quantizer)
    for x in np.load(folder / "calib.npy"):
        model(torch.from_numpy(np.ascontiguousarray(x[None])))
    model = quantize_pt2e.convert_pt2e(model, fold_quantize=False)
    kwargs["quant_config"] = QuantConfig(pt2e_quantizer=quantizer)
edge = litert_torch.convert(model, args, **kwargs)
(folder / "model.tflite").write_bytes(edge.model_content())
(folder / "result.json").write_text(json.dumps(
    {"litert-torch": version("litert-torch"), "ai-edge-litert": version("ai-edge-litert"),
     "torch": torch.__version__}))
"""


def converter_python(setting: str | None) -> Path:
    """The interpreter that runs the conversion (see the module docstring for the order).

    Raises:
        MissingDependencyError: none of them exists or has litert-torch.
    """
    import importlib.util

    if setting or os.environ.get(ENV_PYTHON):
        py = Path(str(setting or os.environ[ENV_PYTHON]))
        if not py.is_file():
            raise MissingDependencyError(
                "the LiteRT converter interpreter does not exist", expected="a python executable",
                found=py.name, fix=f"set {ENV_PYTHON} (or the pass's python) to the interpreter "
                "of an environment with litert-torch", code="missing-dependency")
        return py
    if importlib.util.find_spec("litert_torch") is not None:
        return Path(sys.executable)
    sibling = Path(sys.prefix).parent / ".venv-litert" / "bin" / "python"
    if sibling.is_file():
        return sibling
    raise MissingDependencyError(
        "the LiteRT converter (litert-torch) is not installed", expected="litert-torch 0.10.0",
        found="not in this environment, no .venv-litert next to it, no $" + ENV_PYTHON,
        fix="python -m venv .venv-litert && .venv-litert/bin/pip install -r constraints-litert.txt "
        f"(or set {ENV_PYTHON})", code="missing-dependency")


class LiteRtConfig(PassConfig):
    quantize: bool = True
    per_channel: bool = True
    python: str | None = None
    timeout_s: float = Field(1800.0, gt=0)


class LiteRtConvert(Pass[LiteRtConfig]):
    """PyTorch nn.Module -> ``model.tflite`` (litert-torch; PT2E full INT8 when ``quantize``)."""

    name = "litert"
    Config = LiteRtConfig
    accepts = ("torch",)
    produces = "tflite"
    requires = ("litert-torch",)
    modules = ("litert_torch",)

    @classmethod
    def missing(cls) -> list[str]:
        """``["litert-torch"]`` when no converter interpreter is found (see converter_python)."""
        try:
            converter_python(None)
        except MissingDependencyError:
            return ["litert-torch"]
        return []

    def run(self, artifact: Artifact, workdir: Path, ctx: BuildContext) -> PassOutput:
        require_2d(artifact, "LiteRT")
        cfg = self.config
        py = converter_python(cfg.python)
        module = copy_module(artifact, self.name)
        calib = require_calibration(ctx) if cfg.quantize else None
        workdir = Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=workdir) as tmp:
            folder = Path(tmp)
            shape = [1, *artifact.io.sample_shape]
            _export(module, shape, folder)
            if calib is not None:
                np.save(folder / "calib.npy", np.asarray(calib, np.float32))
            (folder / "job.json").write_text(json.dumps(
                {"shape": shape, "quantize": cfg.quantize, "per_channel": cfg.per_channel}))
            ctx.progress("LiteRT: converting in a child process")
            data, tools = _convert_in_child(py, folder, cfg.timeout_s)
        out = workdir / "model.tflite"
        atomic_write_bytes(out, data)
        self._tools = tools
        io = replace(artifact.io, input_shape=tuple(shape), dynamic_batch=False)
        record: dict[str, Any] = {"bytes": len(data), "quantized": cfg.quantize,
                                  "converter_tools": tools}
        if calib is not None:
            record["calibration_samples"] = int(len(calib))
        return (artifact.evolve(path=workdir, model_file=out.name, format="tflite", io=io,
                                payload=None), record)

    def tool_versions(self) -> dict[str, str]:
        return dict(getattr(self, "_tools", {}))


def _export(module: Any, shape: list[int], folder: Path) -> None:
    """``torch.export`` ``module`` at ``shape`` and save the program to ``folder/model.pt2``."""
    import torch

    try:
        with torch.no_grad():
            ep = torch.export.export(module, (torch.zeros(shape, dtype=torch.float32),))
        torch.export.save(ep, str(folder / "model.pt2"))
    except Exception as exc:  # torch.export raises many types
        raise ExportError("torch.export failed before the LiteRT conversion",
                          found=f"{type(exc).__name__}: {exc}"[:500],
                          fix="check that torch.export can export the model at batch 1",
                          code="convert-failed") from None


def _convert_in_child(py: Path, folder: Path, timeout_s: float) -> tuple[bytes, dict[str, str]]:
    """Run the converter in ``py`` on ``folder``; the .tflite bytes and the child's versions.

    Raises:
        ExportError: the child failed (convert-failed), died or timed out (converter-crashed).
    """
    env = {**os.environ, "PYTHONNOUSERSITE": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop("PYTHONPATH", None)
    try:
        proc = subprocess.run([str(py), "-c", _CHILD, str(folder)], capture_output=True,
                              text=True, timeout=timeout_s, env=env, cwd=folder)
    except subprocess.TimeoutExpired:
        raise ExportError("the LiteRT converter ran past its time limit",
                          expected=f"done within {timeout_s:g} s", found="still running",
                          fix="raise the pass's timeout_s", code="converter-crashed") from None
    tflite = folder / "model.tflite"
    if proc.returncode < 0 or (proc.returncode == 0 and not tflite.is_file()):
        raise ExportError("the LiteRT converter crashed", expected="exit status 0 and a model",
                          found=f"exit status {proc.returncode}; " + proc.stderr[-300:],
                          fix="this model's layers crash litert-torch; use another target",
                          code="converter-crashed")
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
        raise ExportError("the LiteRT conversion failed",
                          found=(lines[-1] if lines else f"exit status {proc.returncode}")[:500],
                          fix="check that litert-torch converts the model", code="convert-failed")
    return tflite.read_bytes(), json.loads((folder / "result.json").read_text())
