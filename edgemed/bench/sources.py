"""What ``edgemed bench`` was pointed at -> candidates, the FP32 reference, and input data.

A source is an artifact directory (``edgemed build`` output, with ``reference/`` holding the FP32
ONNX), a bundle (opened through ``edgemed_runtime.open`` with ``trust`` / ``device_key``), a plain
``.onnx`` file, or a model to build first (anything ``edgemed.build`` takes: ``monai:Arch ...``,
``module:factory``, a TorchScript file).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
from edgemed_runtime import Artifact, PreprocessSpec, is_bundle
from edgemed_runtime.sdk import ARTIFACT_FILE

from ..errors import InvalidInputError
from .candidates import Candidate
from .ceiling import cache_dir


@dataclass(frozen=True)
class Source:
    """A resolved source: its candidate, FP32 reference (if known), IO and preprocessing."""

    candidate: Candidate
    sample_shape: tuple[int, ...]
    preprocess: PreprocessSpec
    reference: Path | None = None
    artifact: Artifact | None = None
    target: str | None = None
    dynamic_batch: bool = True
    notes: tuple[str, ...] = field(default_factory=tuple)


def _size(p: Path) -> int:
    if p.is_file():
        return p.stat().st_size
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())


def looks_like_model_spec(text: str) -> bool:
    """True for ``monai:...``, ``pkg.mod:factory`` and TorchScript/PyTorch files (built first)."""
    p = Path(text)
    if p.exists():
        return p.is_file() and p.suffix in (".pt", ".pth", ".ts", ".torchscript")
    return ":" in text and not text.startswith(("/", "."))


def _artifact_label(art: Artifact) -> str:
    t = dict(art.target)
    variant = t.get("variant", "")
    return (f"edgemed {t.get('name', '')} {variant}".strip() + f" ({art.format}, {art.backend})")


def resolve(path_or_spec: str, *, name: str, role: str, threads: int,
            open_args: dict[str, Any] | None = None, e2e: bool = True) -> Source:
    """Turn a path into a Source (no model is built here; see ``build_source``).

    Raises:
        InvalidInputError: the path does not exist or is not something edgemed can run.
    """
    p = Path(path_or_spec)
    opts = {"threads": threads}
    if not p.exists():
        raise InvalidInputError(
            "nothing to benchmark at this path",
            expected="an artifact directory, a bundle (.edgemed), an .onnx file, or a model spec "
                     "such as 'monai:DenseNet121 spatial_dims=2 in_channels=1 out_channels=2'",
            found=str(p), fix="check the path", code="not-found")
    if p.is_dir() and (p / ARTIFACT_FILE).is_file():
        art = Artifact.load(p)
        ref = p / "reference" / "model.onnx"
        gm = None
        c = Candidate(name, "edgemed", str(p), role=role, label=_artifact_label(art),
                      options={**dict(art.backend_options), **opts},
                      precision=_precision(art.format, art.model_path), gmacs=gm,
                      size_bytes=_size(art.model_path), e2e=e2e, imports=_modules(art.backend))
        return Source(c, tuple(art.io.sample_shape), art.preprocess,
                      ref if ref.is_file() else None, art, str(art.target.get("name") or "") or None,
                      art.io.dynamic_batch)
    if is_bundle(p):
        import edgemed_runtime

        args = dict(open_args or {})
        with edgemed_runtime.open(p, options=opts, **args) as sess:
            io, spec, info, backend = sess.io, sess.preprocess, dict(sess.info), sess.backend
        c = Candidate(name, "edgemed", str(p), role=role, open_args=args, options=opts,
                      label=f"edgemed bundle {p.name} ({info.get('format', '?')}, {backend})",
                      precision=_precision(str(info.get("format", "")), None), size_bytes=_size(p),
                      e2e=e2e, imports=_modules(backend))
        target = info.get("target")
        return Source(c, tuple(io.sample_shape), spec, None, None,
                      target.get("name") if isinstance(target, dict) else target, io.dynamic_batch,
                      ("bundle: the FP32 reference is not inside; pass --reference for peers",))
    if p.is_file() and p.suffix in (".onnx", ".ort"):
        import edgemed_runtime

        with edgemed_runtime.open(p, options=opts) as sess:
            io = sess.io
        c = Candidate(name, "edgemed", str(p), role=role, options=opts, e2e=e2e,
                      label=f"{p.name} (onnxruntime)", precision=_precision("", p),
                      size_bytes=_size(p), imports=("onnxruntime",))
        return Source(c, tuple(io.sample_shape), PreprocessSpec(size=tuple(io.sample_shape[-2:])),
                      p if p.suffix == ".onnx" and c.precision == "fp32" else None, None, None,
                      io.dynamic_batch)
    raise InvalidInputError(
        "not something edgemed can benchmark",
        expected="an artifact directory (with artifact.json), a bundle, an .onnx file or a model "
                 "spec", found=str(p), fix="pass the output folder of `edgemed build`",
        code="not-a-model")


def _modules(backend: str) -> tuple[str, ...]:
    from edgemed_runtime.sdk import backend_class

    try:
        return tuple(backend_class(backend).modules)
    except InvalidInputError:
        return ()


def _precision(fmt: str, model_path: Path | None) -> str:
    if fmt in ("onnx-qdq",):
        return "int8"
    if model_path is not None and model_path.suffix == ".onnx":
        from .macs import count_macs

        try:
            return "int8" if count_macs(model_path).int8 else "fp32"
        except InvalidInputError:
            return "fp32"
    return "int8" if fmt in ("ort", "openvino-ir", "trt-plan-recipe") else "fp32"


@functools.lru_cache(maxsize=1)
def code_fingerprint() -> str:
    """SHA-256 over the source of ``edgemed`` and ``edgemed_runtime``: a cached build made by
    other code (a changed pass, a fixed backend) is not reused."""
    import edgemed
    import edgemed_runtime

    h = hashlib.sha256()
    for pkg in (edgemed, edgemed_runtime):
        root = Path(pkg.__file__).parent
        for f in sorted(root.rglob("*.py")):
            h.update(str(f.relative_to(root)).encode() + b"\0" + f.read_bytes())
    return h.hexdigest()


def build_source(model: str, *, input_shape: tuple[int, ...], target: str, calib: np.ndarray,
                 progress: Callable[[str], None] | None = None, rebuild: bool = False,
                 select: str = "auto", weights: str | os.PathLike[str] | None = None) -> Path:
    """Build ``model`` for ``target`` with ``calib`` (cached by model, weights, shape, target,
    data, variant selection, the profile's content and the build code itself).

    ``select``: ``"auto"`` (the build times the variants), ``"default"``, or a variant's name.
    ``weights``: a state_dict file; without it a model spec gets fresh random weights per build.
    """
    import edgemed
    from edgemed.pipeline import BuildOptions

    from ..targets import load_target

    prof = load_target(target)
    h = hashlib.sha256(json.dumps([model, list(input_shape), target, select, prof.sha256]).encode())
    h.update(hashlib.sha256(np.ascontiguousarray(calib).tobytes()).digest())
    h.update(code_fingerprint().encode())
    for f in (Path(model), Path(weights) if weights else None):
        if f is not None and f.is_file():
            h.update(f.read_bytes())
    out = cache_dir() / "builds" / h.hexdigest()[:24]
    if rebuild or not (out / ARTIFACT_FILE).is_file():
        edgemed.build(model, input_shape=input_shape, calibration=calib, target=target, out=out,
                      progress=progress, options=BuildOptions(select=select), weights=weights)
    return out


@dataclass(frozen=True)
class BenchData:
    """Inputs the benchmark uses: calibration (for peers), check inputs, one DICOM file."""

    calib: np.ndarray
    check: np.ndarray
    dicom: Path | None
    origin: str


def synthetic_data(spec: PreprocessSpec, sample_shape: tuple[int, ...], workdir: Path,
                   *, n_calib: int = 32, n_check: int = 32, dicom_size: int = 512) -> BenchData:
    """Synthetic CT slices (``edgemed.data.synthetic``), preprocessed with ``spec``.

    Calibration and check sets come from different seeds; falls back to seeded normal noise when
    the spec's output does not have the model's sample shape.
    """
    from edgemed_runtime.sdk import load_input

    from ..data.synthetic import make_dataset

    per = 8
    cal = make_dataset(workdir / "calib", n_patients=max(1, -(-n_calib // per)),
                       slices_per_patient=per, size=dicom_size, seed=0)
    chk = make_dataset(workdir / "check", n_patients=max(1, -(-n_check // per)),
                       slices_per_patient=per, size=dicom_size, seed=1)
    try:
        xc = np.stack([load_input(p, spec) for p in cal.paths[:n_calib]]).astype(np.float32)
        xv = np.stack([load_input(p, spec) for p in chk.paths[:n_check]]).astype(np.float32)
        if tuple(xc.shape[1:]) == tuple(sample_shape):
            return BenchData(xc, xv, chk.paths[0], "synthetic CT DICOM (edgemed.data.synthetic)")
    except InvalidInputError:
        pass
    rng = np.random.default_rng(0)
    return BenchData(rng.standard_normal((n_calib, *sample_shape)).astype(np.float32),
                     rng.standard_normal((n_check, *sample_shape)).astype(np.float32), None,
                     "seeded normal noise (the preprocessing does not give the model's shape)")


def user_data(calib: str | os.PathLike[str], spec: PreprocessSpec, sample_shape: tuple[int, ...],
              *, n_calib: int = 32, n_check: int = 32) -> BenchData:
    """Calibration/check inputs from a DICOM folder or .npy/.npz (via edgemed.calibration)."""
    from edgemed_runtime import IOSpec

    from ..calibration import to_arrays

    arr = to_arrays(calib, IOSpec(input_shape=(1, *sample_shape)), spec, what="calibration")
    x = arr.x
    rng = np.random.default_rng(0)
    idx = rng.permutation(len(x))
    dicom = arr.paths[0] if arr.paths else None
    n_cal = min(n_calib, max(1, len(x) // 2)) if len(x) > 1 else 1
    return BenchData(x[idx[:n_cal]], x[idx[n_cal:n_cal + n_check]] if len(x) > 1 else x, dicom,
                     str(calib))


def temp_workdir() -> Path:
    return Path(tempfile.mkdtemp(prefix="edgemed-bench-"))
