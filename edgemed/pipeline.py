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

from edgemed_runtime.api import open_artifact
from edgemed_runtime.artifact import Artifact
from edgemed_runtime.iospec import IOSpec
from edgemed_runtime.preprocess import PreprocessSpec
from edgemed_runtime.util import atomic_write_bytes

from .bench.timing import interleaved_latency
from .calibration import sample_calibration, to_arrays
from .gate_probe import gate_backend, probe_candidate
from .errors import GateError, InvalidInputError, MissingDependencyError, ProfileError
from .evaluate import GateConfig, GateResult, check_labels, run_gate
from .model import ModelSource, load_model
from .passes.base import BuildContext, get_pass_class
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


def _check_forward(src: ModelSource, io: IOSpec) -> int:
    """Run the model once on zeros; return the number of classes. Raises on a shape mismatch."""
    if src.kind == "onnx":
        import onnxruntime as ort

        s = ort.InferenceSession(str(src.onnx_path), providers=["CPUExecutionProvider"])
        out = s.run(None, {io.input_name: np.zeros(io.input_shape, np.float32)})[0]
        return int(out.shape[-1])
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
    if out.ndim != 2:
        raise InvalidInputError("the model must output (batch, classes) logits",
                                found=str(tuple(out.shape)))
    return int(out.shape[-1])


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
    from edgemed_runtime.backends import backend_class

    missing = list(backend_class(variant.backend).missing())
    if missing and variant.gate_backend and backend_class(variant.gate_backend).is_available():
        missing = []  # built and gated here with gate_backend; it runs on the device
    for pname, _ in variant.pass_specs():
        missing += [m for m in get_pass_class(pname).missing() if m not in missing]
    return f"missing packages: {', '.join(missing)}" if missing else ""


def _logits(art: Artifact, backend: str, options: dict[str, Any], x: np.ndarray, batch: int) -> np.ndarray:
    if not art.io.dynamic_batch:
        batch = art.io.input_shape[0]  # fixed-shape models (e.g. mobile) take exactly that batch
    with open_artifact(art, backend=backend, options=options) as sess:
        return np.concatenate([sess.run({art.io.input_name: x[i:i + batch]})[art.io.output_names[0]]
                               for i in range(0, len(x), batch)])


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
    progress: Callable[[str], None] | None = None,
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
        preprocess: the PreprocessSpec (default: resize to the input size, window from the file).
        gate: accuracy gate limits (default: the profile's).
    Returns:
        the chosen Artifact (on disk in ``out``).
    Raises:
        InvalidInputError, ExportError, CalibrationError, ProfileError: bad input.
        GateError: no candidate passed the gate (``out/report.json`` is written, no artifact).
    """
    opts = options or BuildOptions()
    say = progress or (lambda msg: None)
    t_start = time.perf_counter()
    profile = load_target(target)
    gate_cfg = gate or profile.gate
    src = load_model(model, weights=weights)
    io = _io_spec(src, example_input, input_shape, labels)
    n_classes = _check_forward(src, io)
    if io.labels and len(io.labels) != n_classes:
        raise InvalidInputError("number of labels differs from the model's outputs",
                                expected=str(n_classes), found=str(len(io.labels)))
    spec = preprocess or PreprocessSpec(size=tuple(io.sample_shape[-2:]),  # type: ignore[arg-type]
                                        channels=io.sample_shape[0] if io.sample_shape[0] in (1, 3) else 1)
    threads = opts.threads or int(profile.runtime.get("threads", 2))
    say("loading calibration data")
    calib = sample_calibration(calibration, io, spec, count=profile.calibration.count,
                               seed=profile.calibration.seed) if calibration is not None else None
    if validation is not None:
        say("loading validation data")
        val = to_arrays(validation, io, spec, what="validation")
        val_x, val_y = val.x, val.y
        if val_y is not None and not io.labels and val.class_names:
            io = IOSpec(**{**io.__dict__, "labels": tuple(val.class_names)})
        check_labels(val_y, n_classes)
        gate_data = "validation set" + ("" if val_y is not None else " (unlabelled: agreement only)")
    elif calib is not None:
        val_x, val_y = calib.x, None
        gate_data = "calibration inputs (no validation set given: agreement only)"
    else:
        val_x, val_y, gate_data = None, None, ""
    match, match_why = host_matches(profile)
    ctx = BuildContext(
        calibration=calib.x if calib is not None else None,
        calibration_info=calib.info() if calib is not None else {}, seed=opts.seed,
        threads=threads, host_matches_target=match, progress=say, extras=dict(opts.extras),
    )
    out_dir = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix="edgemed-build-"))
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        return _build_in(stage, out_dir, src, io, spec, profile, gate_cfg, ctx, opts, calib,
                         val_x, val_y, gate_data, match, match_why, threads, say, t_start)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _build_in(stage: Path, out_dir: Path, src: ModelSource, io: IOSpec, spec: PreprocessSpec,
              profile: TargetProfile, gate_cfg: GateConfig, ctx: BuildContext, opts: BuildOptions,
              calib: Any, val_x: np.ndarray | None, val_y: np.ndarray | None, gate_data: str,
              match: bool, match_why: str, threads: int, say: Callable[[str], None],
              t_start: float) -> Artifact:
    work = stage / "work"
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
    runner = _Runner(source, work, ctx)
    device_flags = cpu_flags() if match else opts.device_cpu_flags
    excluded: dict[str, str] = {}
    for v in profile.variants:
        ok, why_not = v.eligible(device_flags)
        if not ok:
            excluded[v.name] = why_not
    isa = {"device_cpu_flags": "build host" if match else (
               "declared (BuildOptions.device_cpu_flags)" if device_flags is not None else "unknown"),
           "flags": isa_summary(device_flags) if device_flags is not None else [],
           "host_flags": isa_summary(), "excluded": excluded}
    baseline = profile.baseline
    if opts.select not in ("auto", "default"):
        profile.variant(opts.select)
        chosen_names = [opts.select]
    elif opts.select == "default" or not match:
        chosen_names = [profile.default_variant]
    else:
        chosen_names = [v.name for v in profile.variants if v.name not in excluded]
    skipped = {n: why for n in chosen_names if (why := variant_unavailable(profile.variant(n)))}
    if skipped and len(skipped) == len(chosen_names) and opts.select == "auto":
        rest = [v.name for v in profile.variants if v.name not in skipped and v.name not in excluded
                and not variant_unavailable(v)]
        chosen_names = rest[:1]
    else:
        chosen_names = [n for n in chosen_names if n not in skipped]
    if not chosen_names:
        raise MissingDependencyError(
            f"no variant of {profile.name} can be built here",
            expected="the packages its variants need", found="; ".join(
                f"{n}: {w}" for n, w in skipped.items()),
            fix="install them, e.g. pip install 'edgemed[openvino]'",
        )
    results: dict[str, tuple[Artifact, GateResult | None]] = {}
    gated_with: dict[str, dict[str, str]] = {}
    state: dict[str, Any] = {"reference": None, "ref_logits": None}

    def gate_one(name: str) -> None:
        v = profile.variant(name)
        art, fp32, qdq = runner.run(v)
        art = art.evolve(backend=v.backend, backend_options=profile.backend_options(v),
                         target={"name": profile.name, "sha256": profile.sha256, "variant": v.name})
        if state["reference"] is None and fp32 is not None:
            state["reference"] = fp32.evolve(backend="onnxruntime",
                                             backend_options=dict(profile.runtime))
            if val_x is not None:
                say("evaluating the FP32 reference")
                state["ref_logits"] = _logits(state["reference"], "onnxruntime",
                                              {"threads": threads}, val_x, opts.eval_batch)
        verdict = None
        if state["ref_logits"] is not None and val_x is not None:
            say(f"{name}: accuracy gate")
            gate_be, gate_why = gate_backend(v)
            gate_opts = {**art.backend_options, "threads": threads}
            verdict = probe_candidate(art, gate_be, gate_opts, val_x[:1], val_y is not None)
            if verdict is None:
                if not match and qdq is not None:
                    # the host's integer kernels are not the device's: Q/DQ simulated in float
                    evaluator = SIMULATED
                    cand = _logits(qdq, "onnxruntime", {"threads": threads,
                                                        "graph_optimization": "disable"},
                                   val_x, opts.eval_batch)
                else:
                    evaluator = (f"{gate_be} on this host's kernels "
                                 f"({', '.join(isa['host_flags']) or 'no ISA flags'})")
                    cand = _logits(art, gate_be, gate_opts, val_x, opts.eval_batch)
                verdict = dataclasses.replace(run_gate(state["ref_logits"], cand, val_y, gate_cfg),
                                              evaluator=evaluator)
            gated_with[name] = {"backend": gate_be, "why": gate_why,
                                "evaluator": verdict.evaluator or "crash probe"}
        results[name] = (art, verdict)

    for name in chosen_names:
        gate_one(name)
    reference: Artifact | None = state["reference"]
    passing = [n for n, (_, g) in results.items() if g is None or g.passed]
    compressed = [n for n in passing if baseline is None or n != baseline.name]
    fallback_needed = not compressed and opts.select in ("auto", "default")
    if (fallback_needed and baseline is not None and baseline.name not in results
            and not variant_unavailable(baseline)):
        gate_one(baseline.name)  # the declared default failed: the FP32 baseline is the fallback
        passing = [n for n, (_, g) in results.items() if g is None or g.passed]
    warnings = []
    first = next((g for _, g in results.values() if g is not None and g.labelled), None)
    if first is not None and first.reference.get("auc", 1.0) < 0.5:
        warnings.append(
            f"the FP32 reference scores AUC {first.reference['auc']:.3f} (< 0.5) on the validation "
            f"set: the class order {list(io.labels)} may not match the model's outputs; pass "
            "labels=... (--labels) in output order")
    warnings += sorted({w for _, g in results.values() if g is not None for w in g.warnings})
    selection: dict[str, Any] = {
        "host_matches_target": match, "host": match_why, "gate_data": gate_data,
        "class_order": list(io.labels), "warnings": warnings,
        "candidates": {n: (g.to_dict() if g else None) for n, (_, g) in results.items()},
        "skipped": skipped, "isa": isa,
        "gated_with": gated_with, "gate_rule": gate_cfg.describe(val_y is not None),
    }
    timings: dict[str, Any] = {}
    base_name = baseline.name if baseline is not None else None
    if not passing or (fallback_needed and profile.require_compressed):
        report = {"ok": False, "target": profile.name, "selection": selection,
                  "seconds": round(time.perf_counter() - t_start, 2)}
        _write_report_only(out_dir, report)
        raise GateError(
            f"no {'compressed ' if passing else ''}candidate for {profile.name} passed the "
            "accuracy gate" + (" (require_compressed: no FP32 fallback)" if passing else ""),
            expected=gate_cfg.describe(val_y is not None),
            found="; ".join(f"{n}: {', '.join(g.reasons)}" for n, (_, g) in results.items()
                            if g and g.reasons),
            fix="try calibration='percentile' or 'entropy', keep sensitive layers in FP32, or "
            "relax the gate deliberately", report=report,
        )
    # status: compressed | fallback-fp32 (no compressed candidate could ship) | fp32 (asked for)
    status, fallback_why = "compressed", ""
    if match and val_x is not None and len(passing) > 1:
        say("timing the candidates on this host")
        timings = _time_variants({n: results[n][0] for n in passing},
                                 None if base_name in passing else reference, val_x[:1],
                                 threads, opts.timing_runs, base_name)
        base_p50 = timings[base_name]["p50"] if base_name in passing else None
        fast = [n for n in compressed if base_p50 is None or timings[n]["p50"] <= base_p50]
        slower = [n for n in compressed if n not in fast]
        pool = fast or [n for n in passing if n == base_name]
        best = min(timings[n]["p50"] for n in pool)
        # candidates within the tie tolerance of the fastest count as equally fast: the first in
        # the profile's order wins, so re-running a build does not flip on timing noise
        chosen = next(n for n in pool if timings[n]["p50"] <= best * (1 + opts.tie_tolerance))
        why = (f"fastest of {len(pool)} compressed candidate(s) that passed the gate and ran no "
               f"slower than FP32, timed on this host ({match_why}); ties within "
               f"{opts.tie_tolerance:.0%} go to the profile's order")
        if slower:
            why += "; slower than FP32 here: " + ", ".join(
                f"{n} {timings[n].get('ratio_to_fp32', 0):.2f}x" for n in slower)
        if chosen == base_name:
            status = "fallback-fp32"
            fallback_why = ("no compressed candidate passed the gate" if not compressed else
                            "every compressed candidate that passed the gate ran slower than FP32 "
                            "on this host: " + ", ".join(
                                f"{n} {timings[n].get('ratio_to_fp32', 0):.2f}x" for n in compressed))
            why = f"FP32 baseline ({fallback_why})"
            if profile.require_compressed:
                report = {"ok": False, "target": profile.name, "selection": selection,
                          "timings_ms": timings, "seconds": round(time.perf_counter() - t_start, 2)}
                _write_report_only(out_dir, report)
                raise GateError(f"no compressed candidate for {profile.name} is worth shipping",
                                expected="a compressed candidate no slower than FP32",
                                found=fallback_why, code="slower-than-fp32", report=report,
                                fix="drop require_compressed, or add faster variants")
    else:
        chosen = next((n for n in passing if n != base_name), passing[0])
        if match and val_x is not None:
            timings = _time_variants({chosen: results[chosen][0]}, reference, val_x[:1], threads,
                                     opts.timing_runs, None)
        how = f"latency {'measured' if timings else 'unmeasured'} ({match_why})"
        tried_compressed = any(n != base_name for n in results)
        if opts.select not in ("auto", "default"):
            why = f"the only candidate requested; {how}"
        elif chosen == base_name and tried_compressed:
            status, fallback_why = "fallback-fp32", "no compressed candidate passed the gate"
            why = f"FP32 baseline ({fallback_why}: " + "; ".join(
                f"{n}: {', '.join(g.reasons)}" for n, (_, g) in results.items()
                if g and g.reasons) + f"); {how}"
        else:
            why = f"the profile's declared default; {how}"
        if chosen == base_name and status == "compressed":
            status = "fp32"
    selection.update({"chosen": chosen, "why": why, "timings_ms": timings, "status": status,
                      "fallback_reason": fallback_why,
                      "latency": "measured" if timings else "unmeasured"})
    art, verdict = results[chosen]
    return _finish(stage, out_dir, art, reference, verdict, selection, profile, opts, t_start)


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


def _finish(stage: Path, out_dir: Path, art: Artifact, reference: Artifact | None,
            verdict: GateResult | None, selection: dict[str, Any], profile: TargetProfile,
            opts: BuildOptions, t_start: float) -> Artifact:
    final_dir = stage / "final"
    suffix = Path(art.model_file).suffix or ".bin"
    final = _copy_artifact(art, final_dir, f"model{suffix}")
    metrics: dict[str, Any] = {"gate": verdict.to_dict() if verdict else None,
                               "size_bytes": final.model_path.stat().st_size}
    if reference is not None and opts.keep_reference:
        ref = _copy_artifact(reference, final_dir / "reference", "model.onnx")
        ref.save()
        metrics["reference_size_bytes"] = ref.model_path.stat().st_size
        metrics["size_ratio"] = round(metrics["size_bytes"] / metrics["reference_size_bytes"], 4)
    final = final.with_record({"pass": "select_variant", **selection})
    final = final.evolve(metrics=metrics)
    final.save()
    report = {"ok": True, "target": profile.name, "chosen": selection["chosen"],
              "metrics": metrics, "selection": selection,
              "seconds": round(time.perf_counter() - t_start, 2)}
    atomic_write_bytes(final_dir / REPORT_FILE, json.dumps(report, indent=2, default=str).encode())
    # swap into place: out_dir is either the old result or the new one, never a mix
    old = None
    if out_dir.exists():
        old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
        out_dir.rename(old)
    final_dir.rename(out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return Artifact.load(out_dir)
