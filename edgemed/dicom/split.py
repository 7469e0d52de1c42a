"""Patient-level, label-stratified train/val/test split, and the leak check.

Every patient goes to exactly one split; patients are stratified by their majority label so each
split keeps the class mix. ``check_no_leak`` verifies the result from the records themselves
(Patient ID and Study Instance UID must each live in one split) and is run on every build.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from edgemed.errors import InvalidInputError

from .index import Record

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class LeakReport:
    """Patients and studies found in more than one split (both empty when the split is clean)."""

    patients: tuple[str, ...]
    studies: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.patients and not self.studies

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "patients_in_several_splits": len(self.patients),
                "studies_in_several_splits": len(self.studies)}


def _patient_label(records: Sequence[Record]) -> str:
    counts = collections.Counter(r.label if r.label is not None else "" for r in records)
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[0][0]


def patient_split(records: Sequence[Record], fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
                  seed: int = 0) -> list[str]:
    """The split name for each record (same order), patient-level and stratified by label.

    Raises:
        InvalidInputError: ``bad-split`` (fractions not summing to 1 or negative).
    """
    if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1.0) > 1e-6:
        raise InvalidInputError("split fractions must be three non-negative numbers summing to 1",
                                found=str(tuple(fractions)), code="bad-split")
    by_patient: dict[str, list[Record]] = collections.defaultdict(list)
    for r in records:
        by_patient[r.patient_id].append(r)
    strata: dict[str, list[str]] = collections.defaultdict(list)
    for pid in sorted(by_patient):
        strata[_patient_label(by_patient[pid])].append(pid)
    assignment: dict[str, str] = {}
    rng = np.random.default_rng(seed)
    for label in sorted(strata):
        pids = strata[label]
        order = [pids[i] for i in rng.permutation(len(pids))]
        n = len(order)
        cuts = np.rint(np.cumsum(fractions) * n).astype(int)
        # a small stratum still feeds val/test before train gets everything
        n_val = cuts[1] - cuts[0]
        n_test = n - cuts[1]
        if n >= 3 and fractions[1] > 0 and n_val == 0:
            n_val = 1
        if n >= 3 and fractions[2] > 0 and n_test == 0:
            n_test = 1
        n_train = n - n_val - n_test
        for i, pid in enumerate(order):
            assignment[pid] = "train" if i < n_train else ("val" if i < n_train + n_val else "test")
    return [assignment[r.patient_id] for r in records]


def check_no_leak(records: Sequence[Record], splits: Sequence[str]) -> LeakReport:
    """Find Patient IDs and Study UIDs present in more than one split."""
    seen_p: dict[str, set[str]] = collections.defaultdict(set)
    seen_s: dict[str, set[str]] = collections.defaultdict(set)
    for r, s in zip(records, splits):
        seen_p[r.patient_id].add(s)
        seen_s[r.study_uid].add(s)
    return LeakReport(tuple(sorted(p for p, v in seen_p.items() if len(v) > 1)),
                      tuple(sorted(s for s, v in seen_s.items() if len(v) > 1)))
