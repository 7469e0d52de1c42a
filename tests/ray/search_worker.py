"""One search worker process: ``python -m tests.ray.search_worker TASK OUT STORAGE RAY SEED N``.

Loads the pickled SearchTask, joins the Ray cluster and runs the shared study (PostgreSQL);
prints the number of trials it ran as JSON. Workers sharing a study use the same seed: the grid's
order comes from it, and trial number k takes grid point k, so no point is run twice.
"""

from __future__ import annotations

import json
import sys


def main(argv: list[str]) -> int:
    import torch

    from edgemed.search import SearchConfig, run_search

    from .test_search_ray import SPACE

    task_file, out, storage, address, seed, trials, target = argv
    task = torch.load(task_file, weights_only=False)
    cfg = SearchConfig(strategy="grid", objective="latency", trials=int(trials), storage=storage,
                       study_name="ray-bar", seed=int(seed), timing_runs=5, space=SPACE,
                       gradcam=False, keep_models=False, ray=address, target=target,
                       ray_wait_s=30)
    res = run_search(task, cfg, out)
    print(json.dumps({"ran": res.ran, "trials": len(res.trials)}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
