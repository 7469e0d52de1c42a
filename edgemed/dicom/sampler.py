"""A deterministic calibration sampler, stratified by label and scanner (Manufacturer / Model).

The count is shared over strata in proportion to their size (largest remainder, at least one
per stratum when the count allows); inside a stratum the files are drawn with a generator seeded
by (seed, stratum), so the choice of one stratum does not depend on the others. The seed, the
count and the per-stratum numbers are recorded with the dataset.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from edgemed.errors import InvalidInputError

from .index import Record


@dataclass(frozen=True)
class CalibrationSample:
    """Chosen record indices (sorted), with what is needed to reproduce and audit them."""

    indices: tuple[int, ...]
    seed: int
    count: int
    strata: tuple[tuple[str, int, int], ...]  # (stratum, available, chosen)

    def to_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "count": self.count, "indices": list(self.indices),
                "strata": [{"stratum": s, "available": a, "chosen": c} for s, a, c in self.strata]}


def stratum_of(r: Record) -> str:
    return f"{r.label if r.label is not None else '-'} | {r.scanner}"


def calibration_sample(records: Sequence[Record], count: int, seed: int = 0,
                       eligible: Sequence[int] | None = None) -> CalibrationSample:
    """Pick ``count`` records (from ``eligible`` indices, default all), stratified.

    Raises:
        InvalidInputError: ``bad-count`` (count < 1) or ``empty`` (nothing eligible).
    """
    if count < 1:
        raise InvalidInputError("calibration count must be >= 1", found=str(count), code="bad-count")
    pool = list(range(len(records))) if eligible is None else list(eligible)
    if not pool:
        raise InvalidInputError("no files to draw calibration data from", code="empty")
    groups: dict[str, list[int]] = {}
    for i in sorted(pool, key=lambda i: records[i].path):
        groups.setdefault(stratum_of(records[i]), []).append(i)
    keys = sorted(groups)
    total = sum(len(groups[k]) for k in keys)
    count = min(count, total)
    quota = {k: count * len(groups[k]) / total for k in keys}
    alloc = {k: int(np.floor(quota[k])) for k in keys}
    if count >= len(keys):
        for k in keys:
            alloc[k] = max(alloc[k], 1)
    rest = count - sum(alloc.values())
    for k in sorted(keys, key=lambda k: (-(quota[k] - np.floor(quota[k])), k)):
        if rest <= 0:
            break
        if alloc[k] < len(groups[k]):
            alloc[k] += 1
            rest -= 1
    while sum(alloc.values()) > count:  # the minimum of one per stratum overshot
        k = max(keys, key=lambda k: (alloc[k], k))
        alloc[k] -= 1
    chosen: list[int] = []
    strata = []
    for k in keys:
        rng = np.random.default_rng([seed, zlib.crc32(k.encode())])
        members = groups[k]
        take = min(alloc[k], len(members))
        chosen += [members[j] for j in rng.permutation(len(members))[:take]]
        strata.append((k, len(members), take))
    return CalibrationSample(tuple(sorted(chosen)), seed, count, tuple(strata))
