"""run_search: an Optuna study over compression configurations, gated on accuracy.

Each trial builds one candidate with the real passes (prune -> fine-tune -> cluster -> export ->
quantize), runs it with onnxruntime on the validation set, applies the accuracy gate against the
FP32 model, and measures the objective: median latency (interleaved with the FP32 model, so
the ratio survives a busy machine) or the zlib-compressed model size. The gate is a constraint
(``user_attrs['constraint'] <= 0`` when passed): TPE uses it as Optuna constraints, simulated
annealing as an energy penalty; the best trial is the fastest (smallest) that passed.

Storage is SQLite in the output folder by default (``sqlite:///OUT/study.db``); any SQLAlchemy
URL works, so several machines can share one study. Running again with the same storage and
study name resumes: only the trials still missing are run.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np
from pydantic import Field

from edgemed_runtime.sdk import atomic_write_bytes

from .._config import Strict
from ..errors import EdgemedError, InvalidInputError
from ..evaluate import GateConfig, run_gate
from .space import SearchSpace, chain, suggest

STRATEGIES = ("grid", "tpe", "anneal")
WHERE_COLUMNS = ("latency_target", "latency_node_id", "latency_device_id", "latency_cpu",
                 "build_node_id", "build_host")
"""Where a trial was timed (``--ray --target``) and built (``--workers``): in trials.csv."""


class SearchConfig(Strict):
    """Settings of a search."""

    strategy: Literal["grid", "tpe", "anneal"] = "tpe"
    objective: Literal["latency", "size"] = "latency"
    trials: int = Field(20, ge=1, le=10_000)
    storage: str | None = None
    study_name: str = "edgemed-search"
    seed: int = 0
    threads: int = Field(2, ge=1)
    timing_runs: int = Field(20, ge=3)
    space: SearchSpace = Field(default_factory=SearchSpace)
    gate: GateConfig = Field(default_factory=GateConfig)
    keep_models: bool = True
    gradcam: bool = True
    min_gradcam_similarity: float = Field(0.5, ge=-1, le=1)
    ray: str | None = None  # a Ray cluster (host:port | auto): latency timed on a target node
    target: str | None = None  # whose ``target:<name>`` resource the latency node must carry
    ray_wait_s: float = Field(60.0, ge=0)  # how long a trial waits for such a node to join
    workers: int = Field(0, ge=0)  # with ray: trials built by this many Ray actors (0: here)


@dataclass
class SearchTask:
    """What is searched over: the trained FP32 model and its data (arrays, N x C x H x W)."""

    model: Any
    train: tuple[np.ndarray, np.ndarray]
    val: tuple[np.ndarray, np.ndarray]
    calibration: np.ndarray
    class_names: tuple[str, ...] = ()
    description: str = ""


@dataclass
class SearchResult:
    """Where the outputs are and what was found."""

    out: Path
    storage: str
    study_name: str
    trials: list[dict[str, Any]]
    pareto: list[dict[str, Any]]
    best: dict[str, Any] | None
    reference: dict[str, Any]
    seconds: float
    ran: int
    files: dict[str, str] = field(default_factory=dict)
    gradcam_flagged: list[int] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"out": str(self.out), "storage": redact(self.storage),
                "study_name": self.study_name,
                "trials": len(self.trials), "ran_now": self.ran, "seconds": round(self.seconds, 1),
                "best": self.best, "pareto": self.pareto, "reference": self.reference,
                "files": self.files, "gradcam_flagged_on_front": self.gradcam_flagged}


def make_sampler(cfg: SearchConfig) -> Any:
    """The Optuna sampler for ``cfg.strategy`` (grid, TPE with constraints, annealing)."""
    import optuna

    from .annealing import SimulatedAnnealingSampler

    if cfg.strategy == "grid":
        return optuna.samplers.GridSampler(cfg.space.choices(), seed=cfg.seed)
    if cfg.strategy == "anneal":
        return SimulatedAnnealingSampler(seed=cfg.seed)
    # the gate is a constraint: objective() records it with Trial.set_constraint (Optuna >= 5),
    # and TPE models infeasible trials apart from feasible ones
    if hasattr(optuna.trial.Trial, "set_constraint"):
        return optuna.samplers.TPESampler(seed=cfg.seed, n_startup_trials=min(5, cfg.trials))
    from .annealing import CONSTRAINT_ATTR

    return optuna.samplers.TPESampler(  # Optuna 4
        seed=cfg.seed, n_startup_trials=min(5, cfg.trials),
        constraints_func=lambda t: [float(t.user_attrs.get(CONSTRAINT_ATTR, 1.0))])


def redact(url: str) -> str:
    """The storage URL with any password hidden (for reports and the console)."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split("@")[-1] if "@" in url else url


def default_storage(out: Path) -> str:
    return f"sqlite:///{(out / 'study.db').resolve()}"


def _create_study(optuna: Any, cfg: SearchConfig, storage: str, attempts: int = 5) -> Any:
    """``optuna.create_study(load_if_exists=True)``, retried when workers that start together
    race to create the schema or the study on a fresh database (an IntegrityError such as
    PostgreSQL's duplicate ``pg_type`` entry: the loser retries and loads what the winner made)."""
    import time

    from sqlalchemy.exc import IntegrityError

    def create() -> Any:
        return optuna.create_study(storage=storage, study_name=cfg.study_name,
                                   sampler=make_sampler(cfg), direction="minimize",
                                   load_if_exists=True)

    for attempt in range(attempts - 1):
        try:
            return create()
        except IntegrityError:
            time.sleep(0.2 * (attempt + 1))
    return create()


def open_study(cfg: SearchConfig, storage: str) -> Any:
    """Create or load the study; InvalidInputError for a bad URL or a mismatched study."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = _create_study(optuna, cfg, storage)
    except Exception as exc:  # SQLAlchemy / Optuna errors: bad URL, unreachable database
        raise InvalidInputError(
            "cannot open the study storage", expected="an SQLAlchemy URL such as "
            "sqlite:///search.db or postgresql://user@host/db",
            found=f"{redact(storage)}: {type(exc).__name__}: "
            f"{(str(exc).splitlines() or [''])[0].replace(storage, redact(storage))}"[:400],
            fix="check the URL and that the database is reachable", code="bad-storage") from None
    meta = {"objective": cfg.objective, "space": cfg.space.model_dump(mode="json")}
    saved = study.user_attrs.get("edgemed")
    if saved is None:
        study.set_user_attr("edgemed", meta)
    elif saved != meta:
        raise InvalidInputError(
            "the study exists with another objective or search space",
            expected=json.dumps(meta)[:300], found=json.dumps(saved)[:300],
            fix="use another --study-name or --storage, or the same settings to resume",
            code="study-mismatch")
    return study


def gate_constraint(gate: Any, cfg: Any) -> float:
    """Optuna's constraint (<= 0: feasible) from a gate verdict: how far the worst rule is from
    its limit (non-inferiority: the CI's lower bound against -margin; absolute: drop - limit)."""
    terms = [-(r["ci"][0] + r["margin"]) for r in (gate.non_inferiority or {}).values()]
    max_acc, max_auc = cfg.absolute_limits()
    ref_m, cand_m = gate.reference, gate.candidate
    if max_acc is not None:
        terms.append(ref_m["accuracy"] - cand_m["accuracy"] - max_acc)
    if max_auc is not None:
        terms.append(ref_m["auc"] - cand_m["auc"] - max_auc)
    terms = [t for t in terms if t == t]  # NaN bounds (a class missing) do not decide
    return float(max(terms)) if terms else 0.0 if gate.passed else 1.0


def _logits(path: Path, x: np.ndarray, threads: int, batch: int = 32) -> np.ndarray:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    s = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    name = s.get_inputs()[0].name
    return np.concatenate([s.run(None, {name: x[i:i + batch]})[0] for i in range(0, len(x), batch)])


def _latency(paths: dict[str, Path], x1: np.ndarray, threads: int, runs: int) -> dict[str, float]:
    import onnxruntime as ort

    from ..bench.timing import interleaved_latency

    calls = {}
    for n, p in paths.items():
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        s = ort.InferenceSession(str(p), so, providers=["CPUExecutionProvider"])
        feed = {s.get_inputs()[0].name: x1}
        calls[n] = (lambda s=s, feed=feed: s.run(None, feed))
    stats = interleaved_latency(calls, runs=runs, warmup=3)
    return {n: st.p50 for n, st in stats.items()}


class _Evaluator:
    """Builds and measures one candidate; holds the FP32 reference."""

    def __init__(self, task: SearchTask, cfg: SearchConfig, out: Path) -> None:
        from edgemed_runtime import Artifact, IOSpec

        from ..passes.base import BuildContext
        from ..passes.torch_common import compressed_size

        self.task, self.cfg, self.out = task, cfg, out
        shape = (1, *task.val[0].shape[1:])
        self.source = Artifact(path=out, format="torch", model_file="",
                               io=IOSpec(input_shape=shape, labels=tuple(task.class_names)),
                               payload=task.model.eval())
        self.ctx = BuildContext(calibration=task.calibration, seed=cfg.seed, threads=cfg.threads,
                                extras={"train": task.train, "val": task.val,
                                        "teacher": task.model})
        self.x1 = np.ascontiguousarray(task.val[0][:1])
        ref_dir = out / "reference"
        ref = self._run_chain([("export_onnx", {})], ref_dir)
        self.ref_path = ref.model_path
        self.ref_logits = _logits(self.ref_path, task.val[0], cfg.threads)
        self.ref_size = compressed_size(self.ref_path.read_bytes())
        y = task.val[1]
        self.reference = {"accuracy": float((self.ref_logits.argmax(1) == y).mean()),
                          "size_zlib_bytes": self.ref_size,
                          "size_bytes": self.ref_path.stat().st_size}

    def _run_chain(self, steps: list[tuple[str, dict[str, Any]]], workdir: Path) -> Any:
        from ..passes.base import get_pass_class

        art = self.source
        self.last_torch = None
        for i, (name, settings) in enumerate(steps):
            wd = workdir / f"{i:02d}_{name}"
            wd.mkdir(parents=True, exist_ok=True)
            art = get_pass_class(name)(settings)(art, wd, self.ctx)
            if art.format == "torch":
                self.last_torch = art.payload
        return art

    def _gradcam(self, png: Path | None) -> dict[str, Any]:
        """Grad-CAM similarity of the torch-side compressed model to FP32 (1.0 if unchanged)."""
        from ..explain import compare_gradcam

        if self.last_torch is None:
            return {"gradcam_correlation": 1.0, "gradcam_flagged": False}
        rep = compare_gradcam(self.task.model, self.last_torch, self.task.val[0][:6],
                              min_similarity=self.cfg.min_gradcam_similarity, png=png)
        return {"gradcam_correlation": rep.mean_correlation, "gradcam_flagged": rep.flagged}

    def evaluate(self, params: dict[str, Any], number: int) -> dict[str, Any]:
        from ..passes.torch_common import compressed_size

        steps = chain(params, seed=self.cfg.seed)
        work = self.out / "work" / f"trial-{number:04d}"
        shutil.rmtree(work, ignore_errors=True)
        t0 = time.perf_counter()
        art = self._run_chain(steps, work)
        build_s = time.perf_counter() - t0
        logits = _logits(art.model_path, self.task.val[0], self.cfg.threads)
        gate = run_gate(self.ref_logits, logits, self.task.val[1], self.cfg.gate)
        where: dict[str, Any] = {}
        if self.cfg.ray:  # on a device carrying the target's resource (edgemed.distributed)
            from ..distributed.scheduling import remote_latency

            lat, where = remote_latency({"cand": art.model_path, "ref": self.ref_path}, self.x1,
                                        target=str(self.cfg.target), threads=self.cfg.threads,
                                        runs=self.cfg.timing_runs, wait_s=self.cfg.ray_wait_s)
        else:
            lat = _latency({"cand": art.model_path, "ref": self.ref_path}, self.x1,
                           self.cfg.threads, self.cfg.timing_runs)
        data = art.model_path.read_bytes()
        size_z = compressed_size(data)
        ref_m, cand_m = gate.reference, gate.candidate
        constraint = gate_constraint(gate, self.cfg.gate)
        macs = next((r.get("macs_after") for r in art.provenance if "macs_after" in r), None)
        row = {"accuracy": cand_m["accuracy"], "auc": cand_m["auc"],
               "accuracy_drop": ref_m["accuracy"] - cand_m["accuracy"],
               "gate_passed": gate.passed, "gate_reasons": list(gate.reasons),
               "latency_ms": lat["cand"], "reference_latency_ms": lat["ref"],
               "latency_ratio": lat["cand"] / lat["ref"], "size_bytes": len(data),
               "size_zlib_bytes": size_z, "size_ratio": size_z / self.ref_size,
               "macs": macs, "build_seconds": round(build_s, 2),
               "chain": [n for n, _ in steps], "constraint": float(constraint), **where}
        keep = self.out / "trials" / f"trial-{number:04d}"
        if self.cfg.gradcam:
            keep.mkdir(parents=True, exist_ok=True)
            row.update(self._gradcam(keep / "gradcam.png" if self.cfg.keep_models else None))
        if self.cfg.keep_models:
            keep.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(art.model_path, keep / ".model.onnx.tmp")
            (keep / ".model.onnx.tmp").replace(keep / "model.onnx")
            atomic_write_bytes(keep / "trial.json", json.dumps(
                {"params": params, **row}, indent=2, default=str).encode())
        shutil.rmtree(work, ignore_errors=True)
        return row


def _rows(study: Any) -> list[dict[str, Any]]:
    from optuna.trial import TrialState

    rows = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        rows.append({"trial": t.number, "objective": float(t.value), **t.params,
                     **{k: v for k, v in t.user_attrs.items()}})
    return rows


def run_search(task: SearchTask, cfg: SearchConfig, out: str | Path, *,
               progress: Callable[[int, int, dict[str, Any] | None], None] | None = None
               ) -> SearchResult:
    """Run (or resume) the study; write the Pareto table, plot and summary under ``out``.

    Args:
        task: the FP32 model and data.
        cfg: strategy, objective, trial count, storage, space, gate.
        out: output folder (created).
        progress: ``(done, total, last_row)`` after each trial (and once at start).
    Returns:
        SearchResult (also written as ``out/summary.json``).
    Raises:
        InvalidInputError: bad storage URL, a study with other settings, malformed data.
    """
    from optuna.trial import TrialState

    from .report import pareto_front, plot_front, write_table

    t_start = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    storage = cfg.storage or default_storage(out)
    if cfg.workers and not cfg.ray:
        raise InvalidInputError("trial workers are Ray actors", expected="--ray ADDRESS with "
                                "--workers N", found=f"--workers {cfg.workers} without --ray",
                                fix="add --ray HOST:PORT, or drop --workers", code="bad-option")
    if cfg.ray:
        from ..distributed.cluster import connect

        if not cfg.target:
            raise InvalidInputError("a search on Ray needs the target whose devices time it",
                                    expected="--target NAME", found="no target",
                                    code="needs-target")
        connect(cfg.ray)
    study = open_study(cfg, storage)
    finished = (TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED)
    done = len(study.get_trials(deepcopy=False, states=finished))
    remaining = max(0, cfg.trials - done)
    if cfg.strategy == "grid":
        remaining = min(remaining, max(0, cfg.space.grid_size() - done))
    if progress:
        progress(done, cfg.trials, None)
    ev = _Evaluator(task, cfg, out)
    if remaining:
        _optimize(study, ev, cfg, n_trials=remaining, progress=progress)
    shutil.rmtree(out / "work", ignore_errors=True)
    rows = _rows(study)
    feasible = [r for r in rows if r.get("gate_passed")]
    front = pareto_front(feasible)
    best = min(feasible, key=lambda r: r["objective"]) if feasible else None
    files = {"pareto_csv": "pareto.csv", "pareto_md": "pareto.md", "trials_csv": "trials.csv",
             "pareto_png": "pareto.png", "summary": "summary.json"}
    write_table(front, out / "pareto.csv", out / "pareto.md")
    write_table(sorted(rows, key=lambda r: r["trial"]), out / "trials.csv", extra=WHERE_COLUMNS)
    flagged = [r["trial"] for r in front if r.get("gradcam_flagged")]
    ref_obj = (float(np.median([r["reference_latency_ms"] for r in rows])) if rows and
               cfg.objective == "latency" else float(ev.reference["size_zlib_bytes"]))
    plot_front(rows, front, out / "pareto.png", objective=cfg.objective,
               references={"FP32": (ref_obj, ev.reference["accuracy"])},
               title=f"{cfg.strategy} search, {len(rows)} trials ({cfg.objective})")
    if cfg.keep_models:  # keep only the models on the Pareto front
        on_front = {f"trial-{r['trial']:04d}" for r in front}
        for d in (out / "trials").glob("trial-*"):
            if d.name not in on_front:
                (d / "model.onnx").unlink(missing_ok=True)
    result = SearchResult(out=out, storage=storage, study_name=cfg.study_name, trials=rows,
                          pareto=front, best=best, reference=ev.reference,
                          gradcam_flagged=flagged,
                          seconds=time.perf_counter() - t_start, ran=remaining, files=files)
    atomic_write_bytes(out / "summary.json",
                       json.dumps(result.to_dict(), indent=2, default=str).encode())
    return result


def _optimize(study: Any, ev: _Evaluator, cfg: SearchConfig, *, n_trials: int,
              progress: Callable[[int, int, dict[str, Any] | None], None] | None) -> None:
    """Run ``n_trials`` more trials of ``study``, each evaluated by ``ev`` and recorded as the
    trial's user attributes and accuracy-gate constraint; ``progress`` after each."""
    from optuna.trial import TrialState

    from .annealing import CONSTRAINT_ATTR

    finished = (TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED)

    def objective(trial: Any) -> float:
        if trial.number >= cfg.trials:  # another worker sharing the study took the last one
            study.stop()
            raise EdgemedError("surplus trial: the study already has its trials",
                               code="surplus-trial")
        params = suggest(trial, cfg.space)
        return record(trial, ev.evaluate(params, trial.number))

    def record(trial: Any, row: dict[str, Any]) -> float:
        for k, v in row.items():
            trial.set_user_attr(k, v)
        trial.set_user_attr(CONSTRAINT_ATTR, row["constraint"])
        if hasattr(trial, "set_constraint"):
            trial.set_constraint("accuracy_gate", row["constraint"])
        return float(row["latency_ms"] if cfg.objective == "latency" else row["size_zlib_bytes"])

    def callback(study: Any, trial: Any) -> None:
        if progress:
            n = len(study.get_trials(deepcopy=False, states=finished))
            progress(n, cfg.trials, {"trial": trial.number, "state": trial.state.name,
                                     "value": trial.value, **trial.params,
                                     **trial.user_attrs})

    if cfg.ray and cfg.workers:  # each trial built by a Ray actor (edgemed.distributed.trials)
        from ..distributed.trials import optimize_on_ray

        optimize_on_ray(study, ev.task, cfg, ev.out, n_trials=n_trials, evaluator=_Evaluator,
                        params=lambda t: suggest(t, cfg.space), record=record,
                        progress=callback)
        return
    from optuna.study import MaxTrialsCallback

    # several workers may share the study: stop once it holds cfg.trials (running ones count)
    stop = MaxTrialsCallback(cfg.trials, states=(*finished, TrialState.RUNNING))
    study.optimize(objective, n_trials=n_trials, catch=(EdgemedError,),
                   callbacks=[callback, stop], gc_after_trial=True)
