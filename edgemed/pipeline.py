"""build(): model -> passes (per candidate variant) -> accuracy gate -> chosen artifact on disk.

For a target profile, every candidate variant the device CPU is eligible for (``when`` /
``unless`` rules on CPU flags) has its pass chain run (shared prefixes, such as the ONNX export,
run once), and each result is gated against the FP32 ONNX reference on the validation set. When
this host can stand in for the target, the passing candidates are timed side by side
(interleaved) with the FP32 baseline and the fastest compressed one no slower than FP32 kept;
otherwise the profile's declared default is used, gated with Q/DQ simulated in float (so the
verdict does not depend on the build host's integer kernels), and the latency is marked
unmeasured. When no compressed candidate can ship, the FP32 baseline does (``fallback-fp32``)
unless the profile sets ``require_compressed``. What was tried, the timings and the choice go into
provenance.
Nothing is written to ``out`` unless the gate passes (then ``report.json`` alone on failure).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgemed_runtime import (Artifact, InferenceSpec, IOSpec, PreprocessSpec, TaskSpec, VolumeSpec,
                             open_artifact)
from edgemed_runtime.sdk import atomic_write_bytes

from .bench.timing import interleaved_latency
from .calibration import sample_calibration, to_arrays
from .gate_probe import gate_backend, probe_candidate
from .errors import GateError, InvalidInputError, MissingDependencyError, ProfileError
from .evaluate import GateConfig, GateResult, check_labels
from .model import ModelSource, load_model
from .passes.base import BuildContext, get_pass_class
from .progress import plan_variants, reporter
from .targets import TargetProfile, Variant, cpu_flags, host_matches, isa_summary, load_target

REPORT_FILE = "report.json"
SIMULATED = "onnxruntime, QDQ simulated in float (graph optimizations off): host-independent"


@dataclass
class BuildOptions:
    """Knobs of ``build`` beyond the data (all have sensible defaults)."""

    seed: int = 0
    threads: int | None = None
    select: str = "auto"  # "auto" (time if host matches), "default", or a variant name
    timing_runs: int = 30
    tie_tolerance: float = 0.05
    keep_reference: bool = True
    eval_batch: int = 16
    ray: str | None = None
    """A Ray cluster (``host:port`` or ``auto``): the gate's logits over a DICOM validation
    folder through Ray Data (``edgemed.distributed.build_eval``); None: in this process."""
    ray_actors: int = 2
    device_cpu_flags: frozenset[str] | None = None
    """The device CPU's flags when the build host cannot stand in for the target (None: unknown;
    variants with a ``when`` rule are then left out)."""
    extras: dict[str, Any] = field(default_factory=dict)


def _io_spec(src: ModelSource, example_input: Any, input_shape: Any, labels: Any) -> IOSpec:
    shape: tuple[int, ...] | None = None
    if example_input is not None:
        raw = example_input.shape if hasattr(example_input, "shape") else np.shape(example_input)
        shape = tuple(int(d) for d in raw)
    elif input_shape is not None:
        shape = tuple(int(d) for d in input_shape)
    if src.kind == "onnx":
        import onnx

        m = onnx.load(str(src.onnx_path), load_external_data=False)
        inp = m.graph.input[0]
        dims = [d.dim_value if d.HasField("dim_value") else 0 for d in inp.type.tensor_type.shape.dim]
        graph_shape = tuple(d or 1 for d in dims)
        if shape is not None and tuple(shape[1:]) != graph_shape[1:]:
            raise InvalidInputError(
                "input shape does not match the ONNX model", expected="x".join(map(str, graph_shape)),
                found="x".join(map(str, shape)), fix="pass the model's real input shape",
                code="shape-mismatch",
            )
        return IOSpec(input_name=inp.name, input_shape=shape or graph_shape,
                      output_names=tuple(o.name for o in m.graph.output),
                      dynamic_batch=dims[0] == 0, labels=tuple(labels or ()))
    if shape is None:
        raise InvalidInputError(
            "the input shape is needed to export a PyTorch model",
            expected="example_input (a tensor) or input_shape such as (1, 1, 224, 224)",
            found="neither", fix="pass --input 1x1x224x224",
        )
    return IOSpec(input_shape=shape, labels=tuple(labels or ()))


def _check_forward(src: ModelSource, io: IOSpec, task: TaskSpec) -> int:
    """Run the model once on zeros; return its output channels (classes / labels). Raises when
    the input shape is refused or the output does not fit ``task``."""
    if src.kind == "onnx":
        import onnxruntime as ort

        s = ort.InferenceSession(str(src.onnx_path), providers=["CPUExecutionProvider"])
        out = s.run(None, {io.input_name: np.zeros(io.input_shape, np.float32)})[0]
        return task.task.check_output(out.shape, io.input_shape, io.labels)
    import torch

    try:
        with torch.no_grad():
            out = src.module(torch.zeros(io.input_shape))
    except Exception as exc:
        raise InvalidInputError(
            "the model does not accept this input shape",
            expected="an input the model's first layer accepts",
            found=f"{'x'.join(map(str, io.input_shape))}: {type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}"[:400],
            fix="pass the input shape the model was trained with (--input NxCxHxW)",
            code="shape-mismatch",
        ) from None
    out = out[0] if isinstance(out, (tuple, list)) else out
    return task.task.check_output(tuple(out.shape), io.input_shape, io.labels)


def _default_spec(io: IOSpec) -> Any:
    """The preprocessing when none is given: resize (2D) / crop-pad (volumes) to the input."""
    if len(io.sample_shape) == 4:  # (C, D, H, W): a volume model
        return VolumeSpec(size=tuple(io.sample_shape[1:]), channels=io.sample_shape[0])  # type: ignore[arg-type]
    return PreprocessSpec(size=tuple(io.sample_shape[-2:]),  # type: ignore[arg-type]
                          channels=io.sample_shape[0] if io.sample_shape[0] in (1, 3) else 1)


def _is_series_data(source: Any, spec: Any) -> bool:
    return isinstance(spec, VolumeSpec) and isinstance(source, (str, os.PathLike)) and Path(
        source).is_dir()


def _calibration(source: Any, io: IOSpec, spec: Any, inference: InferenceSpec | None,
                 profile: TargetProfile) -> Any:
    """The calibration set: streamed from DICOM series for a volume model, else as before."""
    if source is None:
        return None
    count, seed = profile.calibration.count, profile.calibration.seed
    if _is_series_data(source, spec):
        from .volumes import sample_volume_calibration

        return sample_volume_calibration(source, io, spec, inference=inference, count=count,
                                         seed=seed)
    return sample_calibration(source, io, spec, count=count, seed=seed)


class _Runner:
    """Runs variants' pass chains, memoising shared prefixes."""

    def __init__(self, source: Artifact, workdir: Path, ctx: BuildContext) -> None:
        self.source = source
        self.workdir = workdir
        self.ctx = ctx
        self.memo: dict[str, Artifact] = {}

    def _step(self, key: str, pname: str, settings: Any, art: Artifact, label: str) -> Artifact:
        if key not in self.memo:
            p = get_pass_class(pname)(settings)
            if art.format not in p.accepts:
                raise ProfileError(
                    f"variant {label!r}: pass {pname} cannot take a {art.format!r} model",
                    expected=" / ".join(p.accepts), found=art.format, code="format-mismatch",
                    fix="start the variant with export_onnx, or pass an ONNX model",
                )
            self.ctx.progress(f"{label}: {pname}")
            wd = self.workdir / f"step{len(self.memo):02d}_{pname}"
            wd.mkdir(parents=True, exist_ok=True)
            self.memo[key] = p(art, wd, self.ctx)
        return self.memo[key]

    def run(self, variant: Variant) -> tuple[Artifact, Artifact | None, Artifact | None]:
        """Return (final artifact, the FP32 ONNX export of the *unmodified* source if any, the
        last QDQ ONNX of the chain if any: what the host-independent evaluator runs).

        When torch-side passes (pruning, clustering...) change the model before the export, the
        reference is the same export run on the source model, so the gate compares the
        compressed candidate with the original FP32 model.
        """
        art, fp32, qdq = self.source, None, None
        key = ""
        torch_changed = False
        for i, (pname, settings) in enumerate(variant.pass_specs()):
            key += json.dumps([pname, settings], sort_keys=True)
            before = art
            art = self._step(key, pname, settings, art, variant.name)
            if art.format == "onnx-qdq":
                qdq = art
            if art.format == "torch" and before.format == "torch" and art is not before:
                torch_changed = True
            if art.format == "onnx" and fp32 is None:
                if torch_changed:
                    ref_key = json.dumps([pname, settings], sort_keys=True)
                    fp32 = self._step(ref_key, pname, settings, self.source, "reference")
                else:
                    fp32 = art
        if fp32 is None and self.source.format == "torch":  # e.g. qat: torch -> onnx-qdq directly
            fp32 = self._step(json.dumps(["export_onnx", {}]), "export_onnx", {}, self.source,
                              "reference")
        return art, fp32, qdq


def variant_unavailable(variant: Variant) -> str:
    """Why ``variant`` cannot be built or run on this host ('' when it can)."""
    from edgemed_runtime.sdk import backend_class

    missing = list(backend_class(variant.backend).missing())
    if missing and variant.gate_backend and backend_class(variant.gate_backend).is_available():
        missing = []  # built and gated here with gate_backend; it runs on the device
    for pname, _ in variant.pass_specs():
        missing += [m for m in get_pass_class(pname).missing() if m not in missing]
    return f"missing packages: {', '.join(missing)}" if missing else ""


def _model_io(model: Any, weights: Any, example_input: Any, input_shape: Any, labels: Any,
              task: TaskSpec | str | None) -> tuple[ModelSource, IOSpec, int, TaskSpec]:
    """Load the model and check one forward pass: (source, IO spec, output channels, task)."""
    task_spec = task if isinstance(task, TaskSpec) else TaskSpec(name=task or "classification")
    src = load_model(model, weights=weights)
    io = _io_spec(src, example_input, input_shape, labels)
    if task_spec.task.spatial_output:
        io = dataclasses.replace(io, dynamic_spatial=True)
    n_classes = _check_forward(src, io, task_spec)
    if io.labels and len(io.labels) != n_classes:
        raise InvalidInputError("number of labels differs from the model's outputs",
                                expected=str(n_classes), found=str(len(io.labels)),
                                code="label-mismatch")
    return src, io, n_classes, task_spec


def build(
    model: Any,
    example_input: Any = None,
    *,
    calibration: Any = None,
    validation: Any = None,
    target: str | os.PathLike[str] | TargetProfile = "cpu-x86",
    out: str | os.PathLike[str] | None = None,
    input_shape: Any = None,
    labels: Any = None,
    preprocess: PreprocessSpec | None = None,
    weights: str | os.PathLike[str] | None = None,
    gate: GateConfig | None = None,
    options: BuildOptions | None = None,
    progress: Callable[[str], None] | bool | None = None,
    quiet: bool = False,
    task: TaskSpec | str | None = None,
    inference: InferenceSpec | None = None,
) -> Artifact:
    """Build the best artifact of ``model`` for ``target``.

    Args:
        model: any form ``load_model`` takes (nn.Module, 'module:factory', 'monai:Arch ...',
            TorchScript or ONNX path).
        example_input: a tensor/array of the input shape (or pass ``input_shape``).
        calibration: DICOM folder, .npy/.npz, array or iterable of preprocessed samples.
        validation: labelled data (DICOM folder with labels.csv or class sub-folders, or
            LabelledArrays); unlabelled data gates on agreement only; None gates on agreement
            over the calibration inputs.
        target: a target profile name, .toml path or TargetProfile.
        out: output directory (replaced atomically); a temporary one if None.
        labels: class names, in output order.
        preprocess: the PreprocessSpec (default: resize to the input size, window from the file),
            or a VolumeSpec for a volume model (then calibration / validation may be folders of
            DICOM series, one sample per series).
        gate: accuracy gate limits (default: the profile's).
        task: "classification" (default), "multilabel", "segmentation" or a TaskSpec.
        inference: how the device runs a volume (whole, or sliding window over ROIs).
        progress, quiet: None shows progress lines on stderr; False or quiet=True nothing; a
            callable gets ``edgemed.progress.ProgressEvent`` s (str messages with fields).
    Returns:
        the chosen Artifact (on disk in ``out``).
    Raises:
        InvalidInputError, ExportError, CalibrationError, ProfileError: bad input.
        GateError: no candidate passed the gate (``out/report.json`` is written, no artifact).
    """
    opts = options or BuildOptions()
    say = reporter(progress, quiet=quiet)  # edgemed/progress.py: None shows a display
    t_start = time.perf_counter()
    profile = load_target(target)
    src, io, n_classes, task_spec = _model_io(model, weights, example_input, input_shape, labels,
                                              task)
    gate_cfg = _gate_config(gate, profile, task_spec)
    spec = preprocess or _default_spec(io)
    threads = opts.threads or int(profile.runtime.get("threads", 2))
    say("loading calibration data")
    calib = _calibration(calibration, io, spec, inference, profile)
    io, evaluator, gate_data = _gate_data(validation, calib, io, spec, n_classes, say,
                                          task=task_spec, gate_cfg=gate_cfg, opts=opts)
    match, match_why = host_matches(profile)
    ctx = BuildContext(
        calibration=calib.x if calib is not None else None,
        calibration_info=calib.info() if calib is not None else {}, seed=opts.seed,
        threads=threads, host_matches_target=match, progress=say, extras=dict(opts.extras),
    )
    if task_spec.name == "segmentation":  # the gate's series, for quantize_openvino_ac's Dice
        ctx.extras.setdefault("segmentation_cases", evaluator)
    out_dir = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix="edgemed-build-"))
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        work = stage / "work"
        b = _Build(profile=profile, io=io, gate_cfg=gate_cfg, ctx=ctx, opts=opts,
                   runner=_Runner(_source(src, io, spec, calib, work).evolve(
                       task=task_spec, inference=inference), work, ctx),
                   evaluator=evaluator, gate_data=gate_data, match=match,
                   match_why=match_why, t_start=t_start, stage=stage, out_dir=out_dir)
        return b.finish(*b.select())
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _gate_config(gate: Any, profile: TargetProfile, task: TaskSpec) -> Any:
    """The gate's rule: the given one, else the profile's (segmentation: ``SegGateConfig``)."""
    if task.name == "segmentation":
        from .segmentation.gate import SegGateConfig

        if gate is not None and not isinstance(gate, SegGateConfig):
            raise InvalidInputError("a segmentation model needs a segmentation gate",
                                    expected="edgemed.segmentation.SegGateConfig",
                                    found=type(gate).__name__, code="bad-option")
        return gate or SegGateConfig()
    return gate or profile.gate


def _gate_data(validation: Any, calib: Any, io: IOSpec, spec: Any, n_classes: int,
               say: Callable[[str], None], *, task: TaskSpec, gate_cfg: Any,
               opts: BuildOptions) -> tuple[IOSpec, Any, str]:
    """(IO spec, the task's gate evaluator, what the gate data is); ``io`` gains the validation
    set's class names when it has none. With ``opts.ray`` a DICOM validation folder is gated
    through Ray Data (``opts.ray_actors`` actors)."""
    from .tasks import evaluator

    batch = opts.eval_batch

    if task.name == "segmentation":
        return io, *_segmentation_data(validation, calib, io, task, gate_cfg=gate_cfg,
                                       n_channels=n_classes, say=say)
    if validation is not None and opts.ray is not None and not _is_series_data(validation, spec):
        from .distributed.build_eval import ray_gate_data

        say("listing validation files (decoded on Ray)")
        return ray_gate_data(validation, io, spec, n_classes, cfg=gate_cfg, batch=batch,
                             address=opts.ray, actors=opts.ray_actors)
    if validation is not None:
        say("loading validation data")
        if _is_series_data(validation, spec):
            from .volumes import load_volume_arrays

            val = load_volume_arrays(validation, io, spec)
        else:
            val = to_arrays(validation, io, spec, what="validation")
        if val.y is not None and not io.labels and val.class_names:
            io = IOSpec(**{**io.__dict__, "labels": tuple(val.class_names)})
        check_labels(val.y, n_classes)
        return io, evaluator(task.name, x=val.x, y=val.y, cfg=gate_cfg, batch=batch), \
            "validation set" + ("" if val.y is not None else " (unlabelled: agreement only)")
    if calib is not None:
        return io, evaluator(task.name, x=calib.x, y=None, cfg=gate_cfg, batch=batch), \
            "calibration inputs (no validation set given: agreement only)"
    return io, evaluator(task.name, x=None, y=None, cfg=gate_cfg, batch=batch), ""


def _segmentation_data(validation: Any, calib: Any, io: IOSpec, task: TaskSpec, *, gate_cfg: Any,
                       n_channels: int, say: Callable[[str], None]) -> tuple[Any, str]:
    """The segmentation evaluator: validation series (with masks: Dice/HD95 against them;
    without: agreement with FP32), else the calibration series (agreement)."""
    from edgemed_runtime.sdk import label_names

    from .tasks import evaluator
    from .tasks.segmentation import load_cases

    source = validation if validation is not None else calib.source if calib is not None else None
    if source is None or not Path(str(source)).is_dir():
        raise InvalidInputError("a segmentation build needs DICOM series to gate on",
                                expected="validation= (or calibration=) a folder of series",
                                found=type(source).__name__, code="empty",
                                fix="pass validation=SERIES_FOLDER (labels.csv with a mask column "
                                "for a Dice gate)")
    say("loading validation series")
    vols, truths = load_cases(source)
    names = label_names(io.labels, task, n_channels)
    what = ("validation series with masks" if truths is not None else
            "series without masks (agreement with FP32 only)")
    return evaluator("segmentation", volumes=vols, truths=truths, label_names=names, cfg=gate_cfg,
                     inputs=calib.x if calib is not None else None), what


def _source(src: ModelSource, io: IOSpec, spec: PreprocessSpec, calib: Any, work: Path) -> Artifact:
    """The loaded model as the source artifact, with its provenance records."""
    if src.kind == "torch":
        source = Artifact(path=work, format="torch", model_file="", io=io, preprocess=spec,
                          payload=src.module)
    else:
        source = Artifact(path=src.onnx_path.parent, format="onnx",  # type: ignore[union-attr]
                          model_file=src.onnx_path.name, io=io, preprocess=spec)  # type: ignore[union-attr]
    source = source.with_record({"pass": "source", "model": src.description, "sha256": src.sha256,
                                 "kind": src.kind})
    if calib is not None:
        source = source.with_record({"pass": "calibration_set", **calib.info()})
    return source


def _ratios(timings: dict[str, Any], names: list[str]) -> str:
    """``name 1.23x`` (p50 relative to FP32) for each of ``names``."""
    return ", ".join(f"{n} {timings[n].get('ratio_to_fp32', 0):.2f}x" for n in names)


_Choice = tuple[str, str, dict[str, Any], str, str]
"""chosen variant, why, timings_ms, status, fallback_reason."""


@dataclass(kw_only=True)
class _Build:
    """One build's state once its inputs are loaded: what was gated, what ships and why."""

    profile: TargetProfile
    io: IOSpec
    gate_cfg: GateConfig
    ctx: BuildContext
    opts: BuildOptions
    runner: _Runner
    evaluator: Any
    gate_data: str
    match: bool
    match_why: str
    t_start: float
    stage: Path
    out_dir: Path
    isa: dict[str, Any] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    results: dict[str, tuple[Artifact, GateResult | None]] = field(default_factory=dict)
    gated_with: dict[str, dict[str, str]] = field(default_factory=dict)
    reference: Artifact | None = None
    ref_logits: Any = None

    @property
    def val_x(self) -> np.ndarray | None:
        """Model-ready inputs for the crash probe and the timing."""
        return self.evaluator.inputs

    @property
    def labelled(self) -> bool:
        return bool(self.evaluator.labelled)

    @property
    def base_name(self) -> str | None:
        return self.profile.baseline.name if self.profile.baseline is not None else None

    def passing(self) -> list[str]:
        return [n for n, (_, g) in self.results.items() if g is None or g.passed]

    def compressed(self) -> list[str]:
        return [n for n in self.passing() if n != self.base_name]

    def reasons(self) -> str:
        """Why the gated candidates failed, one ``name: reasons`` per candidate."""
        return "; ".join(f"{n}: {', '.join(g.reasons)}" for n, (_, g) in self.results.items()
                         if g and g.reasons)

    def candidates(self) -> list[str]:
        """The variants to gate: eligible on the device CPU (``isa``) and buildable here (the
        rest in ``skipped``). Raises MissingDependencyError when none is."""
        profile, opts = self.profile, self.opts
        device_flags = cpu_flags() if self.match else opts.device_cpu_flags
        excluded: dict[str, str] = {}
        for v in profile.variants:
            ok, why_not = v.eligible(device_flags, task=self.runner.source.task.name)
            if not ok:
                excluded[v.name] = why_not
        self.isa = {"device_cpu_flags": "build host" if self.match else (
                        "declared (BuildOptions.device_cpu_flags)" if device_flags is not None
                        else "unknown"),
                    "flags": isa_summary(device_flags) if device_flags is not None else [],
                    "host_flags": isa_summary(), "excluded": excluded}
        if opts.select not in ("auto", "default"):
            profile.variant(opts.select)
            names = [opts.select]
        elif opts.select == "default" or not self.match:
            names = [profile.default_variant]
        else:
            names = [v.name for v in profile.variants if v.name not in excluded]
        self.skipped = {n: why for n in names if (why := variant_unavailable(profile.variant(n)))}
        if self.skipped and len(self.skipped) == len(names) and opts.select == "auto":
            names = [v.name for v in profile.variants if v.name not in self.skipped
                     and v.name not in excluded and not variant_unavailable(v)][:1]
        else:
            names = [n for n in names if n not in self.skipped]
        if not names:
            raise MissingDependencyError(
                f"no variant of {profile.name} can be built here",
                expected="the packages its variants need", found="; ".join(
                    f"{n}: {w}" for n, w in self.skipped.items()),
                fix="install them, e.g. pip install 'edgemed[openvino]'",
            )
        return names

    def gate_one(self, name: str) -> None:
        """Build variant ``name`` and gate it against the FP32 reference (into ``results``)."""
        profile, v = self.profile, self.profile.variant(name)
        art, fp32, qdq = self.runner.run(v)
        art = art.evolve(backend=v.backend, backend_options=profile.backend_options(v),
                         target={"name": profile.name, "sha256": profile.sha256, "variant": v.name})
        if self.reference is None and fp32 is not None:
            self.reference = fp32.evolve(backend="onnxruntime",
                                         backend_options=dict(profile.runtime))
            if self.val_x is not None:
                self.ctx.progress("evaluating the FP32 reference")
                self.ref_logits = self.evaluator.outputs(self.reference, "onnxruntime",
                                                         {"threads": self.ctx.threads})
        verdict = None
        if self.ref_logits is not None and self.val_x is not None:
            verdict = self._verdict(name, v, art, qdq, self.val_x)
        self.results[name] = (art, verdict)

    def _verdict(self, name: str, v: Variant, art: Artifact, qdq: Artifact | None,
                 val_x: np.ndarray) -> GateResult:
        """Probe ``art`` for crashes, then run the accuracy gate on this host's kernels, or on
        the Q/DQ graph simulated in float when the host does not stand in for the target."""
        self.ctx.progress(f"{name}: accuracy gate")
        threads = self.ctx.threads
        gate_be, gate_why = gate_backend(v)
        gate_opts = {**art.backend_options, "threads": threads}
        verdict = probe_candidate(art, gate_be, gate_opts, val_x[:1], self.labelled)
        if verdict is None:
            if not self.match and qdq is not None:
                # the host's integer kernels are not the device's: Q/DQ simulated in float
                evaluator = SIMULATED
                cand = self.evaluator.outputs(qdq, "onnxruntime", {
                    "threads": threads, "graph_optimization": "disable"})
            else:
                evaluator = (f"{gate_be} on this host's kernels "
                             f"({', '.join(self.isa['host_flags']) or 'no ISA flags'})")
                cand = self.evaluator.outputs(art, gate_be, gate_opts)
            verdict = dataclasses.replace(self.evaluator.verdict(self.ref_logits, cand),
                                          evaluator=evaluator)
        self.gated_with[name] = {"backend": gate_be, "why": gate_why,
                                 "evaluator": verdict.evaluator or "crash probe"}
        return verdict

    def record(self) -> dict[str, Any]:
        """The selection provenance before the choice: what was gated, skipped, excluded."""
        warnings = []
        first = next((g for _, g in self.results.values() if g is not None and g.labelled), None)
        if first is not None and (first.reference or {}).get("auc", 1.0) < 0.5:
            warnings.append(
                f"the FP32 reference scores AUC {first.reference['auc']:.3f} (< 0.5) on the "
                f"validation set: the class order {list(self.io.labels)} may not match the "
                "model's outputs; pass labels=... (--labels) in output order")
        warnings += sorted({w for _, g in self.results.values() if g is not None
                            for w in g.warnings})
        return {
            "host_matches_target": self.match, "host": self.match_why, "gate_data": self.gate_data,
            "class_order": list(self.io.labels), "warnings": warnings,
            "candidates": {n: (g.to_dict() if g else None) for n, (_, g) in self.results.items()},
            "skipped": self.skipped, "isa": self.isa, "gated_with": self.gated_with,
            "gate_rule": self.gate_cfg.describe(self.labelled),
        }

    def failed(self, selection: dict[str, Any], **extra: Any) -> dict[str, Any]:
        """Write ``report.json`` alone into ``out_dir`` for a build that ships nothing."""
        report = {"ok": False, "target": self.profile.name, "selection": selection, **extra,
                  "seconds": round(time.perf_counter() - self.t_start, 2)}
        _write_report_only(self.out_dir, report)
        return report

    def select(self) -> tuple[Artifact, GateResult | None, dict[str, Any]]:
        """Gate the candidates (and the FP32 baseline when no compressed one passed), choose
        one; return it, its verdict and the selection record.

        Raises:
            GateError: nothing may ship (``report.json`` alone is written).
        """
        names = self.candidates()
        plan_variants(self.ctx.progress, names)
        for name in names:
            self.gate_one(name)
        baseline, profile = self.profile.baseline, self.profile
        fallback_needed = not self.compressed() and self.opts.select in ("auto", "default")
        if (fallback_needed and baseline is not None and baseline.name not in self.results
                and not variant_unavailable(baseline)):
            self.gate_one(baseline.name)  # the declared default failed: FP32 is the fallback
        passing, selection = self.passing(), self.record()
        if not passing or (fallback_needed and profile.require_compressed):
            report = self.failed(selection)
            raise GateError(
                f"no {'compressed ' if passing else ''}candidate for {profile.name} passed the "
                "accuracy gate" + (" (require_compressed: no FP32 fallback)" if passing else ""),
                expected=self.gate_cfg.describe(self.labelled), found=self.reasons(),
                fix="try calibration='percentile' or 'entropy', keep sensitive layers in FP32, "
                "or relax the gate deliberately", report=report,
            )
        # status: compressed | fallback-fp32 (no compressed candidate could ship) | fp32 (asked for)
        if self.match and self.val_x is not None and len(passing) > 1:
            chosen, why, timings, status, fallback_why = self.timed(passing, self.val_x, selection)
        else:
            chosen, why, timings, status, fallback_why = self.untimed(passing)
        selection.update({"chosen": chosen, "why": why, "timings_ms": timings, "status": status,
                          "fallback_reason": fallback_why,
                          "latency": "measured" if timings else "unmeasured"})
        art, verdict = self.results[chosen]
        return art, verdict, selection

    def timed(self, passing: list[str], val_x: np.ndarray, selection: dict[str, Any]) -> _Choice:
        """Time the passing candidates side by side with the FP32 baseline; choose the fastest
        compressed one no slower than FP32, else FP32 (fallback-fp32)."""
        base, opts, compressed = self.base_name, self.opts, self.compressed()
        self.ctx.progress("timing the candidates on this host")
        timings = _time_variants({n: self.results[n][0] for n in passing},
                                 None if base in passing else self.reference, val_x[:1],
                                 self.ctx.threads, opts.timing_runs, base)
        # FP32 is the bar: the baseline's time, or the FP32 reference's when the baseline failed
        base_p50 = (timings[base] if base in passing else timings.get("fp32-reference", {})
                    ).get("p50")
        fast = [n for n in compressed if base_p50 is None or timings[n]["p50"] <= base_p50]
        slower = [n for n in compressed if n not in fast]
        pool = fast or [n for n in passing if n == base] or compressed
        best = min(timings[n]["p50"] for n in pool)
        # candidates within the tie tolerance of the fastest count as equally fast: the first in
        # the profile's order wins, so re-running a build does not flip on timing noise
        chosen = next(n for n in pool if timings[n]["p50"] <= best * (1 + opts.tie_tolerance))
        why = (f"fastest of {len(pool)} compressed candidate(s) that passed the gate and ran no "
               f"slower than FP32, timed on this host ({self.match_why}); ties within "
               f"{opts.tie_tolerance:.0%} go to the profile's order")
        if slower:
            why += "; slower than FP32 here: " + _ratios(timings, slower)
        if not fast and base not in passing:
            why = (f"fastest compressed candidate; every one ran slower than the FP32 reference "
                   f"({_ratios(timings, compressed)}) and the FP32 baseline failed the gate: "
                   f"{self.reasons()}")
        if chosen != base:
            return chosen, why, timings, "compressed", ""
        fallback_why = ("no compressed candidate passed the gate" if not compressed else
                        "every compressed candidate that passed the gate ran slower than FP32 "
                        "on this host: " + _ratios(timings, compressed))
        if self.profile.require_compressed:
            report = self.failed(selection, timings_ms=timings)
            raise GateError(f"no compressed candidate for {self.profile.name} is worth shipping",
                            expected="a compressed candidate no slower than FP32",
                            found=fallback_why, code="slower-than-fp32", report=report,
                            fix="drop require_compressed, or add faster variants")
        return chosen, f"FP32 baseline ({fallback_why})", timings, "fallback-fp32", fallback_why

    def untimed(self, passing: list[str]) -> _Choice:
        """The one candidate asked for, or the profile's declared default (FP32 when it failed);
        timed alone against the FP32 reference when the host stands in for the target."""
        base, opts = self.base_name, self.opts
        status, fallback_why = "compressed", ""
        chosen = next((n for n in passing if n != base), passing[0])
        timings: dict[str, Any] = {}
        if self.match and self.val_x is not None:
            timings = _time_variants({chosen: self.results[chosen][0]}, self.reference,
                                     self.val_x[:1], self.ctx.threads, opts.timing_runs, None)
        how = f"latency {'measured' if timings else 'unmeasured'} ({self.match_why})"
        tried_compressed = any(n != base for n in self.results)
        if opts.select not in ("auto", "default"):
            why = f"the only candidate requested; {how}"
        elif chosen == base and tried_compressed:
            status, fallback_why = "fallback-fp32", "no compressed candidate passed the gate"
            why = f"FP32 baseline ({fallback_why}: {self.reasons()}); {how}"
        elif self.match and opts.select == "auto":
            why = f"the only candidate of {len(self.results)} that passed the gate; {how}"
        else:
            why = f"the profile's declared default; {how}"
        if chosen == base and status == "compressed":
            status = "fp32"
        return chosen, why, timings, status, fallback_why

    def finish(self, art: Artifact, verdict: GateResult | None,
               selection: dict[str, Any]) -> Artifact:
        """Write the chosen artifact (and the FP32 reference) and its report into ``out_dir``."""
        final_dir = self.stage / "final"
        suffix = Path(art.model_file).suffix or ".bin"
        final = _copy_artifact(art, final_dir, f"model{suffix}")
        metrics: dict[str, Any] = {"gate": verdict.to_dict() if verdict else None,
                                   "size_bytes": final.model_path.stat().st_size}
        if self.reference is not None and self.opts.keep_reference:
            ref = _copy_artifact(self.reference, final_dir / "reference", "model.onnx")
            ref.save()
            metrics["reference_size_bytes"] = ref.model_path.stat().st_size
            metrics["size_ratio"] = round(metrics["size_bytes"] / metrics["reference_size_bytes"], 4)
        final = final.with_record({"pass": "select_variant", **selection})
        final = final.evolve(metrics=metrics)
        final.save()
        report = {"ok": True, "target": self.profile.name, "chosen": selection["chosen"],
                  "metrics": metrics, "selection": selection,
                  "seconds": round(time.perf_counter() - self.t_start, 2)}
        atomic_write_bytes(final_dir / REPORT_FILE, json.dumps(report, indent=2, default=str).encode())
        # swap into place: out_dir is either the old result or the new one, never a mix
        old = None
        if self.out_dir.exists():
            old = self.out_dir.with_name(f".{self.out_dir.name}.old-{os.getpid()}")
            self.out_dir.rename(old)
        final_dir.rename(self.out_dir)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return Artifact.load(self.out_dir)


def _time_variants(arts: dict[str, Artifact], reference: Artifact | None, x: np.ndarray,
                   threads: int, runs: int, baseline: str | None) -> dict[str, Any]:
    """Interleaved p50/p99 of each artifact (and of ``reference`` as "fp32-reference" when
    given); ``ratio_to_fp32`` against the baseline variant or the reference."""
    sessions = {n: open_artifact(a, options={**a.backend_options, "threads": threads})
                for n, a in arts.items()}
    if reference is not None:
        sessions["fp32-reference"] = open_artifact(reference, options={"threads": threads})
    try:
        feeds = {n: {s.io.input_name: x} for n, s in sessions.items()}
        calls = {n: (lambda s=s, f=feeds[n]: s.run(f)) for n, s in sessions.items()}
        stats = interleaved_latency(calls, runs=runs, warmup=3)
    finally:
        for s in sessions.values():
            s.close()
    out: dict[str, Any] = {n: st.to_dict() for n, st in stats.items()}
    ref_name = baseline if baseline in stats else "fp32-reference"
    if ref_name in stats:
        ref = stats[ref_name].p50
        for n in arts:
            out[n]["ratio_to_fp32"] = round(stats[n].p50 / ref, 4)
    return out


def _write_report_only(out_dir: Path, report: dict[str, Any]) -> None:
    """Gate failed: leave only report.json (no model, no artifact.json) in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in ("artifact.json",):
        (out_dir / stale).unlink(missing_ok=True)
    atomic_write_bytes(out_dir / REPORT_FILE, json.dumps(report, indent=2, default=str).encode())


def _copy_artifact(art: Artifact, dest: Path, model_name: str) -> Artifact:
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(art.model_path, dest / model_name)
    for extra in art.extra_files:
        (dest / extra).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(Path(art.path) / extra, dest / extra)
    return art.evolve(path=dest, model_file=model_name)
