"""``bench()``: the one call behind ``edgemed bench`` (the CLI only parses and renders)."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

from edgemed_runtime.sdk import atomic_write_bytes

from ..errors import InvalidInputError, ProfileError
from .candidates import Candidate
from .runner import (
    BenchConfig,
    header,
    run_measurements,
    speed_ratios,
    summarize,
    unique_names,
)
from .sources import (
    BenchData,
    Source,
    build_source,
    looks_like_model_spec,
    resolve,
    synthetic_data,
    temp_workdir,
    user_data,
)


@dataclass(frozen=True)
class BenchResult:
    """Everything one benchmark measured (``data`` is the JSON document)."""

    data: dict[str, Any]

    @property
    def budget(self) -> dict[str, Any]:
        return self.data.get("budget", {})

    @property
    def exit_code(self) -> int:
        """0, or 1 when the target profile's latency or memory budget is exceeded."""
        return 1 if self.budget.get("exceeded") else 0

    def candidate(self, name: str) -> dict[str, Any]:
        return self.data["candidates"][name]

    def to_json(self) -> str:
        return json.dumps(self.data, indent=2, sort_keys=True, default=str)

    def save(self, path: str | os.PathLike[str]) -> Path:
        p = Path(path)
        atomic_write_bytes(p, self.to_json().encode())
        return p

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "BenchResult":
        p = Path(path)
        try:
            d = json.loads(p.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InvalidInputError("cannot read the benchmark result",
                                    expected="a JSON file written by `edgemed bench --save`",
                                    found=f"{p}: {type(exc).__name__}", code="not-a-result") from None
        if not isinstance(d, dict) or d.get("kind") != "edgemed-bench":
            raise InvalidInputError("not an edgemed benchmark result",
                                    expected='a JSON object with "kind": "edgemed-bench"',
                                    found=str(p), code="not-a-result")
        return cls(d)


def _macs(c: Candidate, reference: Path | None, notes: dict[str, str]) -> Candidate:
    from .macs import count_macs

    path = Path(c.path)
    model = None
    if c.kind == "onnx":
        model = path
    elif c.kind == "edgemed" and path.is_dir() and (path / "artifact.json").is_file():
        from edgemed_runtime import Artifact

        mp = Artifact.load(path).model_path
        model = mp if mp.suffix == ".onnx" else None
    elif c.kind == "edgemed" and path.suffix == ".onnx":
        model = path
    if model is None and reference is not None:
        model = reference
        notes[f"gmacs {c.name}"] = "counted on the FP32 reference graph (its own format is not ONNX)"
    if model is None:
        notes[f"gmacs {c.name}"] = "unknown: no ONNX graph to count"
        return c
    try:
        return replace(c, gmacs=count_macs(model).gmacs)
    except InvalidInputError as exc:
        notes[f"gmacs {c.name}"] = exc.message
        return c


def _budget(target: str | None, explicit: bool, primary: dict[str, Any]) -> dict[str, Any]:
    if not target:
        return {"checked": False, "why": "no target profile (pass --target)"}
    from ..targets import load_target

    try:
        prof = load_target(target)
    except ProfileError:
        if explicit:
            raise
        return {"checked": False, "why": f"target profile {target!r} not found on this machine"}
    out: dict[str, Any] = {"checked": True, "target": prof.name, "exceeded": False, "reasons": []}
    lat = primary.get("latency_ms", {}).get("p50")
    if prof.budget.latency_ms is not None and lat is not None:
        out["latency_ms"] = {"budget": prof.budget.latency_ms, "measured_p50": lat}
        if lat > prof.budget.latency_ms:
            out["exceeded"] = True
            out["reasons"].append(f"p50 latency {lat:.2f} ms > budget {prof.budget.latency_ms} ms")
    rss = primary.get("cold", {}).get("peak_rss_mb", {}).get("median")
    if prof.budget.memory_mb is not None and rss is not None:
        out["memory_mb"] = {"budget": prof.budget.memory_mb, "measured_peak_rss": rss}
        if rss > prof.budget.memory_mb:
            out["exceeded"] = True
            out["reasons"].append(f"peak RSS {rss:.0f} MB > budget {prof.budget.memory_mb} MB")
    return out


def ratio_table(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per timed candidate: p50, ratios to FP32 / best peer / edgemed, size, accuracy."""
    c = summary["candidates"]
    timed = [n for n in summary["order"] if "latency_ms" in c[n]]
    peers = [n for n in timed if c[n]["role"] == "peer"]
    best_peer = min(peers, key=lambda n: c[n]["latency_ms"]["p50"]) if peers else None
    fp32 = next((n for n in timed if c[n]["role"] == "fp32"), None)
    fp32_size = c[fp32]["size_bytes"] if fp32 else None
    rows = []
    for n in timed:
        d = c[n]
        row: dict[str, Any] = {"name": n, "p50_ms": d["latency_ms"]["p50"],
                               "p99_ms": d["latency_ms"]["p99"],
                               "process_spread_pct": d["process_p50_ms"]["spread_pct"]}
        for key, other in (("vs_fp32", fp32), ("vs_best_peer", best_peer), ("vs_edgemed", "edgemed")):
            if other and other != n:
                r = speed_ratios(summary, n, other)
                if r:
                    row[key] = r["median"]
                    row[key + "_range"] = [r["min"], r["max"]]
        if fp32_size and d.get("size_bytes"):
            row["size_vs_fp32"] = round(d["size_bytes"] / fp32_size, 4)
        if "agreement_with_baseline" in d:
            row["top1_agreement"] = d["agreement_with_baseline"]["top1_agreement"]
        if "efficiency" in d:
            row["fraction_of_ceiling"] = d["efficiency"]["fraction_of_ceiling"]
        rows.append(row)
    return rows


def bench(
    source: str | os.PathLike[str],
    *,
    compare: Sequence[str | os.PathLike[str] | tuple[str, str | os.PathLike[str]]] = (),
    backends: Sequence[str] = (),
    peers: bool = False,
    config: BenchConfig | None = None,
    target: str | None = None,
    calib: str | os.PathLike[str] | None = None,
    dicom: str | os.PathLike[str] | None = "synthetic",
    reference: str | os.PathLike[str] | None = None,
    trust: str | os.PathLike[str] | None = None,
    device_key: str | os.PathLike[str] | None = None,
    bundle_args: dict[str, Any] | None = None,
    input_shape: Sequence[int] = (1, 1, 224, 224),
    check_samples: int = 32,
    ceilings: bool = True,
    progress: Callable[[str], None] | None = None,
) -> BenchResult:
    """Benchmark ``source`` (artifact, bundle, ONNX file or model spec) on this machine.

    Args:
        compare: more artifacts/bundles/ONNX files timed in the same processes (a path, or a
            ``(name, path)`` pair to name it in the tables).
        backends: also run the artifact on these registered backends (skipped with a reason
            when absent or unable to run its format).
        peers: add ORT FP32, ORT ``quantize_static`` defaults and NNCF + OpenVINO defaults.
        target: the profile whose budgets apply (default: the artifact's).
        calib: DICOM folder / .npy for peer calibration and checks (default: synthetic CT).
        dicom: a DICOM file for the end-to-end figure, ``"synthetic"`` or None to skip.
        reference: the FP32 ONNX for peers/ratios when ``source`` carries none (bundles).
        trust, device_key: for bundles, passed to ``edgemed_runtime.open``.
        bundle_args: more ``edgemed_runtime.open`` arguments for bundles (e.g. ``state_dir``);
            values must survive JSON (they cross into the worker processes).
        input_shape: for a model spec that is built first.
        check_samples: inputs on which every candidate's outputs are compared with FP32.
        ceilings: measure this machine's GEMM ceilings (cached per machine) and time a GEMM
            interleaved with the candidates, from which each one's fraction of the machine comes.
    Raises:
        InvalidInputError, ProfileError, BundleError, BackendError: bad input or a failed backend.
    """
    cfg = config or BenchConfig()
    cfg.check()
    if target is not None:
        from ..targets import load_target

        load_target(target)  # an unknown or invalid profile fails before any measuring
    b = _Bench(cfg=cfg, say=progress or (lambda m: None), work=temp_workdir(), calib=calib,
               check_samples=check_samples)
    try:
        src_text, built_from = b.model(str(source), input_shape, target)
        primary, cands = b.candidates(src_text, compare, backends,
                                      _open_args(trust, device_key, bundle_args))
        data = b.data(primary.preprocess, primary.sample_shape)
        dicom_path = b.dicom_file(dicom, data)
        ref = Path(reference) if reference else primary.reference
        cands = unique_names([_macs(c, ref, b.notes) for c in cands + b.peers(ref, data, peers)])
        doc = b.measure(cands, source=str(source), built_from=built_from, primary=primary,
                        data=data, dicom_path=dicom_path, ceilings=ceilings)
        doc["budget"] = _budget(target or primary.target, target is not None,
                                doc["candidates"]["edgemed"])
        return BenchResult(doc)
    finally:
        shutil.rmtree(b.work, ignore_errors=True)


def _open_args(trust: Any, device_key: Any, bundle_args: dict[str, Any] | None) -> dict[str, Any]:
    """``edgemed_runtime.open`` arguments for bundles (paths as strings: they cross processes)."""
    open_args = {k: str(v) for k, v in (("trust", trust), ("device_key", device_key)) if v}
    open_args.update({k: (str(v) if isinstance(v, os.PathLike) else v)
                      for k, v in (bundle_args or {}).items()})
    return open_args


@dataclass(kw_only=True)
class _Bench:
    """One benchmark: its settings, and the notes and skipped candidates gathered on the way."""

    cfg: BenchConfig
    say: Callable[[str], None]
    work: Path
    calib: Any
    check_samples: int
    notes: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)

    def data(self, spec: Any, sample_shape: Sequence[int]) -> BenchData:
        return _data(self.calib, spec, sample_shape, self.work, self.check_samples)

    def model(self, source: str, input_shape: Sequence[int], target: str | None
              ) -> tuple[str, str | None]:
        """``source``, or the artifact built from it when it is a model spec (and the spec)."""
        if not looks_like_model_spec(source):
            return source, None
        from edgemed_runtime import PreprocessSpec

        shape = tuple(int(d) for d in input_shape)
        spec0 = PreprocessSpec(size=shape[-2:], channels=shape[1] if shape[1] in (1, 3) else 1)
        data0 = self.data(spec0, shape[1:])
        self.say(f"building {source} for {target or 'cpu-x86'}")
        return str(build_source(source, input_shape=shape, target=target or "cpu-x86",
                                calib=data0.calib, progress=self.say)), source

    def candidates(self, source: str, compare: Sequence[Any], backends: Sequence[str],
                   open_args: dict[str, Any]) -> tuple[Source, list[Candidate]]:
        """The primary source, then ``compare``'s and the primary on other ``backends``."""
        threads = self.cfg.threads
        primary = resolve(source, name="edgemed", role="edgemed", threads=threads,
                          open_args=open_args)
        sources: list[Source] = [primary]
        for i, other in enumerate(compare):
            given, other = other if isinstance(other, tuple) else (None, other)
            s = resolve(str(other), name=f"compare{i + 1}", role="other", threads=threads,
                        open_args=open_args, e2e=False)
            nm = given or ((s.target or Path(str(other)).stem) if s.artifact is not None
                           else Path(str(other)).stem)
            sources.append(replace(s, candidate=replace(s.candidate, name=nm)))
        cands = [s.candidate for s in sources]
        return primary, cands + _backend_candidates(primary, backends, self.skipped)

    def dicom_file(self, dicom: str | os.PathLike[str] | None, data: BenchData) -> Path | None:
        """The DICOM file for the end-to-end figure (None: not measured)."""
        if dicom == "synthetic":
            if data.dicom is None:
                self.notes["end-to-end"] = ("no DICOM file: the synthetic set does not fit "
                                            "this model")
            return data.dicom
        if dicom is None:
            return None
        path = Path(dicom)
        if not path.is_file():
            raise InvalidInputError("DICOM file not found", found=str(path), code="not-found")
        return path

    def peers(self, ref: Path | None, data: BenchData, peers: bool) -> list[Candidate]:
        """ORT FP32 from ``ref`` (and with ``peers`` the other peer recipes)."""
        if ref is not None:
            from .peers import PEERS, build_peers

            which = PEERS if peers else ("ort-fp32",)
            ps = build_peers(ref, data.calib, threads=self.cfg.threads, which=which,
                             progress=self.say)
            self.skipped.update(ps.skipped)
            return list(ps.candidates)
        if peers:
            for p in ("ort-fp32", "ort-quantize_static", "nncf+openvino"):
                self.skipped[p] = "no FP32 reference model (pass --reference model.onnx)"
        return []

    def measure(self, cands: list[Candidate], *, source: str, built_from: str | None,
                primary: Source, data: BenchData, dicom_path: Path | None,
                ceilings: bool) -> dict[str, Any]:
        """Time ``cands`` in fresh processes; the result document (but the budget)."""
        cfg, ceil = self.cfg, None
        if ceilings:
            from .ceiling import get_ceilings

            self.say("GEMM ceilings of this machine")
            ceil = get_ceilings(cfg.threads)
        baseline = "ort-fp32" if any(c.name == "ort-fp32" for c in cands) else cands[0].name
        m, load = run_measurements(cands, cfg, sample_shape=primary.sample_shape,
                                   preprocess=primary.preprocess.to_dict(), check=data.check,
                                   dicom=dicom_path, progress=self.say, in_run_ceiling=ceilings)
        summary = summarize(cands, m, cfg, baseline=baseline, ceilings=ceil)
        doc: dict[str, Any] = {
            **header(), **summary,
            "source": source, "built_from": built_from,
            "artifact": str(primary.artifact.path) if primary.artifact else None,
            "config": {**cfg.__dict__, "batch_sizes": list(cfg.batch_sizes)},
            "data": {"origin": data.origin, "calib_samples": int(len(data.calib)),
                     "check_samples": int(len(data.check)),
                     "dicom": str(dicom_path) if dicom_path else None},
            "ceilings": ceil.to_dict() if ceil else None, "load": load,
            "skipped": self.skipped, "notes": {**self.notes, **m.notes},
        }
        doc["ratio_table"] = ratio_table(doc)
        return doc


def _data(calib: Any, spec: Any, sample_shape: Sequence[int], work: Path, n_check: int) -> BenchData:
    if calib is not None:
        return user_data(calib, spec, tuple(sample_shape), n_check=n_check)
    return synthetic_data(spec, tuple(sample_shape), work, n_check=n_check)


def _backend_candidates(primary: Source, backends: Sequence[str], skipped: dict[str, str]) -> list[Candidate]:
    from edgemed_runtime.sdk import backend_class, backend_names

    out = []
    art = primary.artifact
    fmt = art.format if art is not None else "onnx"
    current = art.backend if art is not None else "onnxruntime"
    for b in backends:
        if b == current:
            continue
        key = f"edgemed@{b}"
        if b not in backend_names():
            skipped[key] = f"backend {b!r} is not registered here (have: {', '.join(backend_names())})"
            continue
        cls = backend_class(b)
        if fmt not in cls.formats:
            skipped[key] = f"backend {b!r} cannot run {fmt!r} artifacts (runs {', '.join(cls.formats)})"
            continue
        if not cls.is_available():
            skipped[key] = f"backend {b!r} needs {', '.join(cls.missing())}"
            continue
        out.append(replace(primary.candidate, name=key, role="backend", backend=b, e2e=False,
                           label=f"{primary.candidate.label} on {b}"))
    return out
