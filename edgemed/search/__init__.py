"""Search for the best compressed model under the accuracy gate (Optuna: grid, TPE, annealing).

    from edgemed.search import SearchConfig, run_search, demo_task
    task = demo_task("out/data")
    result = run_search(task, SearchConfig(strategy="tpe", trials=20), "out")
"""

from .annealing import SimulatedAnnealingSampler
from .demo import demo_task
from .report import pareto_front
from .space import SearchSpace, chain
from .study import SearchConfig, SearchResult, SearchTask, run_search

__all__ = ["SearchConfig", "SearchResult", "SearchSpace", "SearchTask",
           "SimulatedAnnealingSampler", "chain", "demo_task", "pareto_front", "run_search"]
