"""Simulated annealing as an Optuna sampler (after Optuna's "user-defined sampler" example).

The state is one trial's parameters. Each new trial proposes a neighbour of the current state:
one or two parameters move to an adjacent choice (categorical choices are taken in their listed
order, numeric ranges by a step of ``neighbour_scale`` of the range). When a trial finishes, the
Metropolis rule accepts it as the new state with probability ``exp(-(E_new - E_cur) / T)``;
the temperature cools geometrically (``T = T0 * cooling^n``). The energy is the objective plus a
penalty for a violated constraint (``trial.user_attrs['constraint'] > 0``, the accuracy gate),
so the walk prefers feasible, fast (or small) configurations.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import optuna
from optuna.distributions import (BaseDistribution, CategoricalDistribution,
                                  FloatDistribution, IntDistribution)
from optuna.samplers import BaseSampler, RandomSampler
from optuna.study import Study, StudyDirection
from optuna.trial import FrozenTrial, TrialState

CONSTRAINT_ATTR = "constraint"


class SimulatedAnnealingSampler(BaseSampler):
    """Simulated annealing over an Optuna search space (single objective).

    Args:
        temperature: initial temperature, in units of the (normalised) energy.
        cooling: geometric cooling factor per finished trial (0 < cooling < 1).
        penalty: energy added per unit of constraint violation (plus 1 for any violation).
        neighbour_scale: step of numeric parameters, as a fraction of their range.
        seed: random seed.
    """

    def __init__(self, *, temperature: float = 1.0, cooling: float = 0.85, penalty: float = 10.0,
                 neighbour_scale: float = 0.2, seed: int | None = None) -> None:
        if not 0 < cooling < 1 or temperature <= 0:
            raise ValueError("need temperature > 0 and 0 < cooling < 1")
        self._rng = np.random.RandomState(seed)
        self._independent = RandomSampler(seed=seed)
        self.t0, self.cooling, self.penalty, self.scale = temperature, cooling, penalty, neighbour_scale

    # --- state -----------------------------------------------------------------------------
    def _energy(self, study: Study, trial: FrozenTrial, scale: float) -> float:
        v = float(trial.value)  # type: ignore[arg-type]
        if study.direction == StudyDirection.MAXIMIZE:
            v = -v
        c = float(trial.user_attrs.get(CONSTRAINT_ATTR, 0.0) or 0.0)
        return v / scale + (self.penalty * (1.0 + c) if c > 0 else 0.0)

    def _current(self, study: Study) -> FrozenTrial | None:
        """Replay the Metropolis walk over the finished trials (deterministic for the seed)."""
        done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
        if not done:
            return None
        scale = max(np.median([abs(float(t.value)) for t in done]), 1e-12)  # type: ignore[arg-type]
        rng = np.random.RandomState([t.number for t in done][0] + len(done))
        cur = done[0]
        for n, t in enumerate(done[1:], start=1):
            e_new, e_cur = self._energy(study, t, scale), self._energy(study, cur, scale)
            temp = self.t0 * self.cooling ** n
            if e_new <= e_cur or rng.rand() < math.exp(-(e_new - e_cur) / max(temp, 1e-12)):
                cur = t
        return cur

    # --- BaseSampler -----------------------------------------------------------------------
    def infer_relative_search_space(self, study: Study, trial: FrozenTrial
                                    ) -> dict[str, BaseDistribution]:
        return optuna.search_space.intersection_search_space(
            study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))

    def sample_relative(self, study: Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        if not search_space:
            return {}
        cur = self._current(study)
        if cur is None:
            return {}
        params = {k: cur.params[k] for k in search_space if k in cur.params}
        names = sorted(params)
        n_move = 1 if len(names) < 3 or self._rng.rand() < 0.7 else 2
        for name in self._rng.choice(names, size=min(n_move, len(names)), replace=False):
            params[name] = self._neighbour(search_space[name], params[name])
        return params

    def _neighbour(self, dist: BaseDistribution, value: Any) -> Any:
        step = 1 if self._rng.rand() < 0.5 else -1
        if isinstance(dist, CategoricalDistribution):
            choices: Sequence[Any] = dist.choices
            i = list(choices).index(value) if value in choices else 0
            j = i + step
            if not 0 <= j < len(choices):
                j = i - step
            return choices[min(max(j, 0), len(choices) - 1)]
        if isinstance(dist, IntDistribution):
            width = max(dist.step, int(round((dist.high - dist.low) * self.scale)))
            return int(min(max(value + step * width, dist.low), dist.high))
        if isinstance(dist, FloatDistribution):
            if dist.log:
                lo, hi = math.log(dist.low), math.log(dist.high)
                v = math.exp(min(max(math.log(value) + step * (hi - lo) * self.scale, lo), hi))
            else:
                v = min(max(value + step * (dist.high - dist.low) * self.scale, dist.low), dist.high)
            if dist.step:
                v = dist.low + round((v - dist.low) / dist.step) * dist.step
            return float(min(max(v, dist.low), dist.high))
        return value

    def sample_independent(self, study: Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        return self._independent.sample_independent(study, trial, param_name, param_distribution)
