"""Search trials as Ray tasks: ``edgemed search --ray ADDRESS --workers N`` drives the cluster.

The Optuna study stays on the driver (or its shared storage): the driver asks for a trial,
sends its parameters to one of ``N`` trial-worker actors (one CPU each, placed by Ray on any
node with a free CPU), and tells the study the result. Each actor holds the search task (the
FP32 model and its data, sent once through the object store) and the FP32 reference, builds and
gates the trial's candidate, and has its latency timed on a node carrying the target's resource
(``remote_latency``). The trial's files (model, Grad-CAM, ``trial.json``) come back as bytes and
are written in the driver's output folder; each trial records the node that built it
(``build_node_id``, ``build_host``).
"""

from __future__ import annotations

import json
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Any, Callable

from edgemed_runtime.sdk import atomic_write_bytes

from ..errors import EdgemedError
from .cluster import import_ray


class TrialWorker:
    """A Ray actor: builds, gates and times trials of one search (its own scratch folder)."""

    def __init__(self, task: Any, cfg: Any, evaluator: Callable[..., Any]) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="edgemed-trial-"))
        self.ev = evaluator(task, cfg, self.tmp)

    def evaluate(self, params: dict[str, Any], number: int) -> dict[str, Any]:
        """``{"row", "files"}`` of trial ``number``, or ``{"error": EdgemedError.to_dict()}``."""
        ray = import_ray()
        try:
            row = self.ev.evaluate(params, number)
        except EdgemedError as exc:
            return {"error": exc.to_dict()}
        row["build_node_id"] = ray.get_runtime_context().get_node_id()
        row["build_host"] = socket.gethostname()
        keep = self.tmp / "trials" / f"trial-{number:04d}"
        files = {f.name: f.read_bytes() for f in sorted(keep.glob("*")) if f.is_file()}
        if "trial.json" in files:  # with where it was built
            files["trial.json"] = json.dumps({"params": params, **row}, indent=2,
                                             default=str).encode()
        shutil.rmtree(keep, ignore_errors=True)
        return {"row": row, "files": files}

    def close(self) -> None:
        """Remove the scratch folder (before the actor is killed)."""
        shutil.rmtree(self.tmp, ignore_errors=True)


def _write(out: Path, number: int, files: dict[str, bytes]) -> None:
    keep = out / "trials" / f"trial-{number:04d}"
    for name, blob in files.items():
        atomic_write_bytes(keep / name, blob)


def optimize_on_ray(study: Any, task: Any, cfg: Any, out: Path, *, n_trials: int,
                    evaluator: Callable[..., Any], params: Callable[[Any], dict[str, Any]],
                    record: Callable[[Any, dict[str, Any]], float],
                    progress: Callable[[Any, Any], None] | None = None) -> None:
    """Run ``n_trials`` more trials of ``study`` on ``cfg.workers`` trial-worker actors, at most
    one trial per worker at a time (ask/tell on the driver).

    ``evaluator(task, cfg, folder)`` makes an actor's trial evaluator (``evaluate(params,
    number) -> row``); ``params(trial)`` suggests a trial's settings; ``record(trial, row)``
    stores its row and returns its objective value; ``progress(study, frozen_trial)`` after
    each. A trial whose build raised (an EdgemedError, another exception, a lost actor) is told
    FAIL with its ``error`` attribute; a lost actor is replaced. On Ctrl-C or any other exit
    the running trials are told FAIL and the actors are removed.
    """
    from optuna.trial import TrialState

    ray = import_ray()
    actor = ray.remote(num_cpus=1)(TrialWorker)
    task_ref = ray.put(task)
    spawn = (lambda: actor.remote(task_ref, cfg, evaluator))
    idle = [spawn() for _ in range(cfg.workers)]
    running: dict[Any, tuple[Any, Any]] = {}
    asked, stop = 0, False
    try:
        while running or (idle and asked < n_trials and not stop):
            while idle and asked < n_trials and not stop:
                trial = study.ask()
                asked += 1
                if trial.number >= cfg.trials:  # another process sharing the study took the last
                    trial.set_user_attr("error", "surplus-trial")
                    _progress(progress, study, study.tell(trial, state=TrialState.FAIL))
                    stop = True
                    break
                w = idle.pop()
                running[w.evaluate.remote(params(trial), trial.number)] = (trial, w)
            if not running:
                break
            ready, _ = ray.wait(list(running), num_returns=1)
            trial, w = running.pop(ready[0])
            res, alive = _result(ray, ready[0])
            idle.append(w if alive else spawn())
            _progress(progress, study, _finish(study, trial, res, out, record))
    finally:
        for trial, w in running.values():
            trial.set_user_attr("error", "stopped before the trial finished")
            study.tell(trial, state=TrialState.FAIL)
        workers = idle + [w for _, w in running.values()]
        ray.wait([w.close.remote() for w in workers], num_returns=len(workers), timeout=30)
        for w in workers:
            ray.kill(w)


def _progress(progress: Callable[[Any, Any], None] | None, study: Any, frozen: Any) -> None:
    if progress:
        progress(study, frozen)


def _result(ray: Any, ref: Any) -> tuple[dict[str, Any], bool]:
    """What a trial-worker returned, or its failure as ``{"error"}``; and whether the actor
    is still alive."""
    try:
        return ray.get(ref), True
    except ray.exceptions.RayActorError as exc:
        return {"error": {"code": "ray-actor-lost",
                          "message": f"{type(exc).__name__}"}}, False
    except ray.exceptions.RayTaskError as exc:
        cause = getattr(exc, "cause", None) or exc
        return {"error": {"code": "trial-crashed", "message": type(cause).__name__}}, True


def _finish(study: Any, trial: Any, res: dict[str, Any], out: Path,
            record: Callable[[Any, dict[str, Any]], float]) -> Any:
    """Tell the study what trial-worker returned (files written under ``out``); returns the
    FrozenTrial."""
    from optuna.trial import TrialState

    if "error" in res:
        trial.set_user_attr("error", f"{res['error']['code']}: {res['error']['message']}")
        return study.tell(trial, state=TrialState.FAIL)
    _write(out, trial.number, res["files"])
    return study.tell(trial, record(trial, res["row"]))
