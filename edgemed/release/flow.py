"""``release()``: DICOM folder + model -> for each target: build, gate, seal, verify as a device,
benchmark, register -> one HTML report. Resumable (content-hashed steps), honest (a failed gate
produces no bundle and a non-zero exit), reproducible (same inputs, same manifests but for
timestamps and signatures)."""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from edgemed_runtime import PreprocessSpec
from edgemed_runtime.sdk import ExitCode, atomic_write_bytes

from ..errors import EdgemedError, InvalidInputError
from .config import ReleaseConfig, load_release_config
from .lock import hold
from .state import StepState, content_key, tree_key

if TYPE_CHECKING:
    from ..targets import TargetProfile

Say = Callable[[str], None]
SHIPPED = ("released", "fallback-fp32")


@dataclass
class TargetOutcome:
    """What happened for one target (``status``: released, fallback-fp32 (shipped the FP32
    baseline: no compressed candidate could ship, ``why`` says why), gate-failed, failed or
    interrupted). ``device_install``: what each device must install to run the bundle."""

    target: str
    status: str = "pending"
    steps: dict[str, str] = field(default_factory=dict)
    artifact: str | None = None
    bundle: str | None = None
    chosen: str | None = None
    why: str | None = None
    gate: dict[str, Any] | None = None
    size_bytes: int | None = None
    size_ratio: float | None = None
    device_check: dict[str, Any] | None = None
    latency: dict[str, Any] | str | None = None
    registry: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    seconds: float = 0.0
    device_install: str | None = None
    step: str | None = None  # the step running when it stopped (failed or interrupted)


@dataclass
class ReleaseResult:
    """The whole release: per-target outcomes, the dataset summary and the report."""

    out: Path
    dataset: dict[str, Any]
    targets: list[TargetOutcome]
    report: Path | None
    seconds: float
    skipped_steps: int = 0
    interrupted: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return self.interrupted is None and all(t.status in SHIPPED for t in self.targets)

    @property
    def exit_code(self) -> int:
        """The command's exit code (edgemed_runtime.exit_codes): 0 every target shipped
        (released or fallback-fp32); 130 interrupted; 5 a target failed (not the gate); 1 the
        others shipped or failed the gate."""
        if self.interrupted is not None:
            return int(ExitCode.INTERRUPTED)
        if self.ok:
            return int(ExitCode.OK)
        if any(t.status not in (*SHIPPED, "gate-failed") for t in self.targets):
            return int(ExitCode.FAILED)
        return int(ExitCode.GATE_FAILED)

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "out": str(self.out), "dataset": self.dataset,
                "targets": [asdict(t) for t in self.targets], "report": str(self.report),
                "seconds": round(self.seconds, 2), "skipped_steps": self.skipped_steps,
                "exit_code": self.exit_code, "interrupted": self.interrupted}


def _spec(cfg: ReleaseConfig) -> PreprocessSpec:
    p = cfg.preprocess
    if p.model_card:
        card_path = cfg.path(p.model_card)
        try:
            card = json.loads(Path(card_path).read_text())  # type: ignore[arg-type]
            return PreprocessSpec.from_dict(card["preprocess"])
        except (OSError, ValueError, KeyError) as exc:
            raise InvalidInputError("cannot read the PreprocessSpec from the model card",
                                    expected='a JSON file with a "preprocess" object',
                                    found=f"{card_path}: {type(exc).__name__}", code="bad-config") from None
    shape = cfg.model.input
    return PreprocessSpec(window=p.window, size=p.size or (shape[-2], shape[-1]), mean=p.mean,
                          std=p.std, channels=p.channels or (shape[1] if shape[1] in (1, 3) else 1))


def _dataset_step(cfg: ReleaseConfig, spec: PreprocessSpec, out: Path, state: StepState,
                  say: Say, outcome_steps: dict[str, str]) -> tuple[str, Any]:
    from ..dicom import build_dataset, load_manifest

    root = cfg.path(cfg.data.dicom)
    if root is None or not root.is_dir():
        raise InvalidInputError("DICOM folder not found", found=str(root), code="not-found")
    labels_csv = cfg.path(cfg.data.labels_csv)
    files = [p for p in root.rglob("*") if p.is_file()]
    key = content_key("dataset", tree_key(files), cfg.data.model_dump(mode="json"), spec.to_dict())
    ds_dir = out / "dataset"
    if state.done("dataset", key, [ds_dir / "dataset.json"]) is not None:
        outcome_steps["dataset"] = "skipped (unchanged)"
        say("dataset: unchanged, skipped")
        return key, load_manifest(ds_dir)
    say("dataset: indexing, patient-level split, calibration sample")
    manifest = build_dataset(root, ds_dir, spec=spec, labels_csv=labels_csv,
                             fractions=cfg.data.split, seed=cfg.data.seed,
                             calib_count=cfg.data.calibration_count, decode=True)
    state.record("dataset", key, {"report": manifest.report})
    outcome_steps["dataset"] = "ran"
    return key, manifest


def _arrays(out: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    from ..dicom import DicomDataset

    return DicomDataset.from_manifest(out / "dataset", split).arrays()


def release(config: ReleaseConfig | str | os.PathLike[str], *, progress: Say | None = None,
            force: bool = False, wait: bool = False) -> ReleaseResult:
    """Run the release flow described by ``config`` (a ReleaseConfig or an edgemed.toml path).

    The release folder is locked for the run (``<out>/.release.lock``, edgemed.release.lock):
    a second run on it raises BusyError (``locked``, naming the holder) at once, or waits for
    it with ``wait``. Ctrl-C (KeyboardInterrupt): the running step leaves nothing behind (builds
    and bundles are staged and renamed into place), the interruption is recorded in the step
    state and in a release.json / report.html that supersede the previous ones atomically, and
    KeyboardInterrupt propagates (the CLI exits 130).

    Raises only for problems that stop every target (bad config, missing data or keys, a held
    lock); a target's own failure is recorded in its outcome and the other targets go on.
    """
    cfg = config if isinstance(config, ReleaseConfig) else load_release_config(config)
    say = progress or (lambda msg: None)
    out = cfg.path(cfg.release.out) or Path("release")
    out.mkdir(parents=True, exist_ok=True)
    with hold(out / ".release.lock", what=f"edgemed release ({cfg.release.family})", wait=wait,
              say=say):
        return _Run(cfg, out, say, force).run()


def _check_keys(cfg: ReleaseConfig) -> None:
    for p in (cfg.signing.publisher_key, cfg.signing.publisher_pub, *cfg.signing.devices):
        q = cfg.path(p.split("=", 1)[-1] if "=" in p and not Path(p).exists() else p)
        if q is None or not q.is_file():
            raise InvalidInputError("key file not found", found=str(q), code="not-found",
                                    fix="edgemed keys generate --kind publisher|device")


class _Run:
    """One release run in a locked folder: dataset, then each target; the result files."""

    def __init__(self, cfg: ReleaseConfig, out: Path, say: Say, force: bool) -> None:
        self.cfg, self.out, self.say, self.t0 = cfg, out, say, time.perf_counter()
        self.state = StepState(out / ".release-state.json")
        if force:
            self.state.data.clear()
        self.outcomes: list[TargetOutcome] = []
        self.dataset: dict[str, Any] = {}
        self.skipped = 0

    def run(self) -> ReleaseResult:
        """The whole run; on KeyboardInterrupt, records it, writes the result files, re-raises."""
        _check_keys(self.cfg)
        self.state.note_run("running")
        try:
            shared = self.prepare()
            for target in self.cfg.release.targets:
                o = TargetOutcome(target)
                self.outcomes.append(o)
                self.target(shared, o)
        except KeyboardInterrupt:
            o = self.outcomes[-1] if self.outcomes else None
            if o is not None and o.status == "pending":
                o.status = "interrupted"
            where = {"target": o.target if o else None, "step": o.step if o else "dataset"}
            info = {"at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"), **where}
            self.state.note_run("interrupted", **where)
            self.finish(info)
            raise
        self.state.note_run("finished")
        return self.finish(None)

    def prepare(self) -> _Shared:
        """The dataset step, the decoded splits and the source model, shared by the targets."""
        from ..dicom import LabelledArrays
        from ..model import load_model

        cfg, out = self.cfg, self.out
        if cfg.model.task == "segmentation":
            return self.prepare_segmentation()
        spec = _spec(cfg)
        ds_steps: dict[str, str] = {}
        data_key, manifest = _dataset_step(cfg, spec, out, self.state, self.say, ds_steps)
        self.skipped += sum(1 for v in ds_steps.values() if v.startswith("skipped"))
        self.dataset = {"root": str(manifest.root), **manifest.report}
        calib_x, _ = _arrays(out, "calibration")
        val_x, val_y = _arrays(out, "val")
        labels = cfg.model.labels or tuple(manifest.class_names)
        src = load_model(cfg.model.source if not (cfg.path(cfg.model.source) or Path()).exists()
                         else str(cfg.path(cfg.model.source)),
                         weights=cfg.path(cfg.model.weights))
        test_files = [manifest.root / manifest.records[i].path for i in manifest.indices("test")]
        if not test_files:
            test_files = [manifest.root / manifest.records[0].path]
        return _Shared(cfg=cfg, state=self.state, out=out, say=self.say, src=src,
                       data_key=data_key, spec=spec, labels=labels, calib_x=calib_x,
                       dicom_file=test_files[0],
                       validation=LabelledArrays(val_x, val_y, tuple(manifest.class_names), ()))

    def prepare_segmentation(self) -> _Shared:
        """The segmentation dataset step (series split by patient) and the source model."""
        from ..model import load_model
        from . import segmentation as seg

        cfg = self.cfg
        data = seg.dataset_step(cfg, self.out, self.state, self.say)
        self.skipped += int(data.skipped)
        self.dataset = data.report
        src = load_model(cfg.model.source if not (cfg.path(cfg.model.source) or Path()).exists()
                         else str(cfg.path(cfg.model.source)),
                         weights=cfg.path(cfg.model.weights))
        return _Shared(cfg=cfg, state=self.state, out=self.out, say=self.say, src=src,
                       data_key=data.key, spec=seg.volume_specs(cfg)[0],  # type: ignore[arg-type]
                       labels=cfg.model.labels, calib_x=np.empty(0, np.float32),
                       validation=data.val, dicom_file=data.check_series, seg=data)

    def target(self, shared: _Shared, o: TargetOutcome) -> None:
        """Release one target into ``o`` (its failure is recorded, not raised)."""
        ts = time.perf_counter()
        try:
            _TargetRelease(shared, o.target, o).run()
        except EdgemedError as exc:
            o.status = "gate-failed" if type(exc).__name__ == "GateError" else "failed"
            o.error = exc.to_dict()
            self.say(f"{o.target}: {o.status}: {exc.message}")
        finally:
            o.seconds = round(time.perf_counter() - ts, 2)
            self.skipped += sum(1 for v in o.steps.values() if v.startswith("skipped"))

    def finish(self, interrupted: dict[str, Any] | None) -> ReleaseResult:
        """Write report.html and release.json (each atomically); return the result."""
        from .report import write_release_report

        result = ReleaseResult(self.out, self.dataset, self.outcomes, None,
                               time.perf_counter() - self.t0, self.skipped, interrupted)
        result.report = write_release_report(result, self.cfg)
        result.seconds = time.perf_counter() - self.t0
        atomic_write_bytes(self.out / "release.json",
                           json.dumps(result.to_dict(), indent=2, default=str).encode())
        return result


@dataclass(frozen=True, kw_only=True)
class _Shared:
    """What every target's release uses: the config, the step state and the prepared data."""

    cfg: ReleaseConfig
    state: StepState
    out: Path
    say: Say
    src: Any
    data_key: str
    spec: PreprocessSpec
    labels: tuple[str, ...]
    calib_x: np.ndarray
    validation: Any
    dicom_file: Path
    seg: Any = None  # segmentation.SegData for a segmentation release


@dataclass
class _TargetRelease:
    """One target's release: build, seal, check as a device, benchmark, register (into ``o``)."""

    s: _Shared
    target: str
    o: TargetOutcome
    name: str = ""  # the profile's name (a target may be given as a .toml path)

    def step(self, step: str, key: str, run: Callable[[], Any], *, outputs: Sequence[Path] = (),
             forget: bool = False, say_skipped: bool = False) -> Any:
        """The result of ``step``: recorded with ``key`` (and its ``outputs`` present) by an
        earlier run, else ``run()``'s (recorded; ``forget`` drops the old record first)."""
        cached = self.s.state.done(f"{self.name}/{step}", key, outputs)
        if cached is not None:
            self.o.steps[step] = "skipped (unchanged)"
            if say_skipped:
                self.s.say(f"{self.target}: {step} unchanged, skipped")
            return cached
        if forget:
            self.s.state.forget(f"{self.name}/{step}")
        self.o.step = step
        result = run()
        self.s.state.record(f"{self.name}/{step}", key, result)
        self.o.steps[step] = "ran"
        return result

    def run(self) -> None:
        """Release the target; raises EdgemedError when a step fails (the outcome says how far
        it got)."""
        from edgemed_runtime import Artifact

        from ..targets import load_target
        from .device_env import for_device_runtime

        o, profile = self.o, load_target(self.target)
        if self.s.cfg.release.require_compressed:
            profile = profile.model_copy(update={"require_compressed": True})
        profile = for_device_runtime(profile, self.s.cfg.release.device_runtime)
        self.name = profile.name
        tdir = self.s.out / "targets" / self.name
        art_dir = tdir / "artifact"
        build_key = self.build(profile, art_dir)
        art = Artifact.load(art_dir)
        sel = next((r for r in art.provenance if r.get("pass") == "select_variant"), {})
        o.artifact, o.chosen, o.why = str(art_dir), sel.get("chosen"), sel.get("why")
        o.gate = art.metrics.get("gate")
        o.size_bytes, o.size_ratio = art.metrics.get("size_bytes"), art.metrics.get("size_ratio")
        bundle_dir, seal_key = self.seal(build_key, art_dir)
        o.bundle = str(bundle_dir)
        check_key = self.device_check(seal_key, bundle_dir, art)
        self.bench(profile, check_key, bundle_dir, tdir)
        self.register(bundle_dir)
        o.status = "fallback-fp32" if sel.get("status") == "fallback-fp32" else "released"
        o.step = None

    def build(self, profile: TargetProfile, art_dir: Path) -> str:
        """Build and gate the artifact into ``art_dir``; return the build's content key."""
        from ..pipeline import BuildOptions, build

        cfg, s = self.s.cfg, self.s
        if s.seg is not None:
            from .segmentation import build_key, run_build, seg_gate

            key = build_key(self, profile, seg_gate(cfg))
            self.step("build", key, lambda: run_build(self, profile, art_dir),
                      outputs=[art_dir / "artifact.json"], forget=True, say_skipped=True)
            return key
        gate = profile.gate.model_copy(update={k: v for k, v in cfg.gate.model_dump().items()
                                               if v is not None})
        key = content_key("build", s.src.sha256, s.data_key, profile.sha256, gate.model_dump(),
                          list(s.labels), s.spec.to_dict(), list(cfg.model.input))

        def run() -> dict[str, str]:
            build(s.src.module if s.src.kind == "torch" else s.src.onnx_path,
                  input_shape=cfg.model.input, calibration=s.calib_x, validation=s.validation,
                  target=profile, out=art_dir, labels=s.labels, preprocess=s.spec, gate=gate,
                  options=BuildOptions(seed=cfg.data.seed),
                  progress=lambda m: s.say(f"{self.target}: {m}"))
            return {"artifact": str(art_dir)}

        self.step("build", key, run, outputs=[art_dir / "artifact.json"], forget=True,
                  say_skipped=True)
        return key

    def seal(self, build_key: str, art_dir: Path) -> tuple[Path, str]:
        """Seal the artifact for the configured devices; return the bundle and its key."""
        from ..bundle import Recipient, SealOptions, seal

        cfg = self.s.cfg
        rel = cfg.release
        devices = [Recipient.load(str(cfg.path(d))) for d in cfg.signing.devices]
        bundle_dir = self.s.out / "bundles" / f"{rel.family}-{self.name}-{rel.version}"
        pub = cfg.path(cfg.signing.publisher_pub)
        key = content_key("seal", build_key, tree_key(art_dir.rglob("*")),
                          rel.model_dump(mode="json"), [d.fingerprint for d in devices],
                          Path(pub).read_bytes().decode())  # type: ignore[arg-type]

        def run() -> dict[str, str]:
            self._not_registered(f"{rel.family}-{self.name}", rel.counter)
            self.s.say(f"{self.target}: sealing for {len(devices)} device(s)")
            env = cfg.signing.passphrase_env
            seal(art_dir, bundle_dir, publisher_key=cfg.path(cfg.signing.publisher_key),
                 publisher_key_password=os.environ.get(env) if env else None, recipients=devices,
                 overwrite=True,
                 options=SealOptions(family=f"{rel.family}-{self.name}", release=rel.counter,
                                     version=rel.version, hardware_ids=rel.hardware_ids,
                                     expires=datetime.now(timezone.utc)
                                     + timedelta(days=rel.expiry_days)))
            return {"bundle": str(bundle_dir)}

        self.step("seal", key, run, outputs=[bundle_dir / "bundle.json"])
        return bundle_dir, key

    def _not_registered(self, family: str, counter: int) -> None:
        """Refuse to seal a release the registry already holds: the new bundle would replace
        the registered one on disk under the same counter (registry and disk would disagree)."""
        from ..bundle import Registry
        from ..errors import BundleError

        try:
            bid = Registry(self.s.out / "registry.sqlite").resolve(f"{family}@{counter}")
        except InvalidInputError:
            return
        raise BundleError(f"release {counter} of {family} is already registered (bundle "
                          f"{bid[:12]}); a new bundle needs a new counter",
                          expected=f"[release] counter > {counter}",
                          found=f"{family}@{counter} in {self.s.out / 'registry.sqlite'}",
                          fix="raise counter in the [release] section of edgemed.toml",
                          code="release-exists")

    def device_check(self, seal_key: str, bundle_dir: Path, art: Any) -> str:
        """Open the bundle as a device would; return the check's key. Raises BundleError when
        it does not open or its outputs differ from the build's."""
        from ..errors import BundleError

        from edgemed_runtime.sdk import MANIFEST_FILE, parse_manifest, requirements_of

        req = requirements_of(parse_manifest((bundle_dir / MANIFEST_FILE).read_bytes()))
        self.o.device_install = req.install_line
        key = content_key("device-check", seal_key, tree_key(bundle_dir.rglob("*")),
                          self.s.cfg.release.device_check)
        self.o.device_check = self.step("device-check", key,
                                        lambda: self._check(bundle_dir, art))
        if self.s.seg is not None:  # the device also needs the SEG writer (runtime[outputs])
            self.o.device_install = self.o.device_check.get("device_install", req.install_line)
        if not self.o.device_check.get("ok"):
            error = self.o.device_check.get("error") or {}
            raise BundleError(f"{self.target}: the bundle does not open as a device would",
                              found=str(error.get("message") or self.o.device_check)[:400],
                              code="device-check-failed")
        return key

    def _check(self, bundle_dir: Path, art: Any) -> dict[str, Any]:
        from edgemed_runtime import open_artifact
        from edgemed_runtime.sdk import verify_bundle

        from .device_check import verify_as_device

        cfg, say, dicom_file = self.s.cfg, self.s.say, self.s.dicom_file
        if self.s.seg is not None:
            from .segmentation import check

            return check(self, bundle_dir, art)
        pub = cfg.path(cfg.signing.publisher_pub)
        key = cfg.path(cfg.signing.verify_device_key)
        if key is None:
            say(f"{self.target}: verifying the signature (no device key given: not decrypted)")
            verify_bundle(bundle_dir, trust=pub, require_hardware=False)
            return {"ok": True, "mode": "signature and manifest only (no verify_device_key)"}
        python, where = None, "this interpreter, SDK packages blocked"
        if cfg.release.device_check == "isolated":
            from edgemed_runtime.sdk import MANIFEST_FILE, parse_manifest, requirements_of

            from .device_env import device_python

            req = requirements_of(parse_manifest((bundle_dir / MANIFEST_FILE).read_bytes()))
            say(f"{self.target}: preparing the device environment ({req.install_line})")
            python, where = device_python(req), f"a venv with only: {req.install_line}"
        say(f"{self.target}: opening the bundle as a device (fresh process, runtime only)")
        res = verify_as_device(bundle_dir, pub, key, dicom_file,  # type: ignore[arg-type]
                               python=python)
        res["environment"] = where
        if res.get("ok"):
            with open_artifact(art) as sess:
                ref = sess.predict(str(dicom_file))[0]
            res["max_abs_diff_vs_build"] = float(np.max(np.abs(np.asarray(res["probabilities"]) - ref)))
            res["ok"] = res["max_abs_diff_vs_build"] <= 1e-4 and not res["leaked_modules"]
            res["mode"] = f"decrypted and ran in a runtime-only process ({where})"
        return res

    def bench(self, profile: TargetProfile, check_key: str, bundle_dir: Path, tdir: Path) -> None:
        """Benchmark the bundle when enabled and this host stands in for the target."""
        from ..targets import host_matches

        cfg = self.s.cfg
        match, why = host_matches(profile)
        if not cfg.bench.enabled or not match:
            self.o.latency = f"unmeasured: {why if not match else 'benchmarks disabled'}"
            self.o.steps["bench"] = "not run"
            return
        key = content_key("bench", check_key, cfg.bench.model_dump())
        self.o.latency = self.step("bench", key, lambda: self._bench(bundle_dir, tdir),
                                   outputs=[tdir / "bench.json"])

    def _bench(self, bundle_dir: Path, tdir: Path) -> dict[str, Any]:
        import tempfile

        from ..bench.api import bench
        from ..bench.runner import BenchConfig

        cfg, target = self.s.cfg, self.target
        if self.s.seg is not None:
            from .segmentation import latency

            res = latency(self, tdir)
            atomic_write_bytes(tdir / "bench.json", json.dumps(res, indent=1).encode())
            return res
        self.s.say(f"{target}: benchmarking the bundle on this host")
        ref = tdir / "artifact" / "reference" / "model.onnx"
        # the benchmark opens the bundle as the device would, with a throwaway rollback state:
        # measuring must never mark a release as accepted on this machine
        state = tempfile.mkdtemp(prefix="edgemed-bench-state-")
        res = bench(bundle_dir, bundle_args={"state_dir": state}, trust=cfg.path(cfg.signing.publisher_pub),
                    device_key=cfg.path(cfg.signing.verify_device_key) if cfg.signing.verify_device_key else None,
                    reference=ref if ref.is_file() else None, dicom=self.s.dicom_file, target=target,
                    config=BenchConfig(runs=cfg.bench.runs, warmup=5, processes=cfg.bench.processes,
                                       cold_processes=1),
                    ceilings=False, progress=lambda m: self.s.say(f"{target}: {m}"))
        shutil.rmtree(state, ignore_errors=True)
        res.save(tdir / "bench.json")
        summary: dict[str, Any] = {}
        for name, c in res.data.get("candidates", {}).items():
            lat = c.get("latency_ms") or {}
            summary[name] = {k: c.get(k) for k in ("ratio", "cold_start_ms", "end_to_end_ms")
                             if c.get(k) is not None}
            summary[name]["p50_ms"] = lat.get("p50")
        return {"candidates": summary, "budget": res.data.get("budget")}

    def register(self, bundle_dir: Path) -> None:
        """Add the bundle to the release registry (under its lock); idempotent per bundle id.

        Raises:
            BundleError: ``release-exists`` (another bundle holds this release: refused)."""
        from ..bundle import Registry

        cfg = self.s.cfg
        path = self.s.out / "registry.sqlite"
        self.o.step = "register"
        with hold(path.with_name(path.name + ".lock"), what="edgemed release (register)",
                  wait=True, say=self.s.say):
            entry = Registry(path).add(bundle_dir, trust=cfg.path(cfg.signing.publisher_pub))
        self.o.registry = {"bundle_id": entry.bundle_id, "family": entry.family,
                           "release": entry.release}
        self.o.steps["register"] = "ran"
