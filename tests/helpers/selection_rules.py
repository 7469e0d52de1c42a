"""The selection rule every build must keep, asserted on a build's ``select_variant`` record.

Rules, not numbers: which variant wins depends on the CPU (integer kernels differ between AVX2 and
AVX-512 VNNI), so the tests check that the choice follows the rule on whatever CPU runs them.
"""

from __future__ import annotations

from typing import Any

from edgemed.targets import TargetProfile, cpu_flags


def assert_selection_rule(sel: dict[str, Any], profile: TargetProfile, tie: float = 0.05) -> None:
    """The ISA filter, the gate, the FP32 baseline and the tie rule, as recorded in ``sel``."""
    names = {v.name for v in profile.variants}
    excluded = set(sel["isa"]["excluded"])
    if not sel["host_matches_target"]:
        return
    assert excluded == {v.name for v in profile.variants if not v.eligible(cpu_flags())[0]}
    assert set(sel["candidates"]) | set(sel["skipped"]) | excluded == names
    assert not set(sel["candidates"]) & excluded
    order = [v.name for v in profile.variants]  # the manifest's JSON is key-sorted
    passing = [n for n in order if n in sel["candidates"] and sel["candidates"][n]["passed"]]
    timed = sel["timings_ms"]
    base = profile.baseline.name if profile.baseline else None
    assert base in passing, "the FP32 baseline is always a candidate and passes"
    assert set(passing) == set(timed)
    compressed = [n for n in passing if n != base]
    fast = [n for n in compressed if timed[n]["p50"] <= timed[base]["p50"]]
    if fast:
        best = min(timed[n]["p50"] for n in fast)
        assert sel["chosen"] == next(n for n in fast if timed[n]["p50"] <= best * (1 + tie))
        assert sel["status"] == "compressed"
    else:
        assert sel["chosen"] == base and sel["status"] == "fallback-fp32"
        assert sel["fallback_reason"]
    assert timed[sel["chosen"]]["p50"] <= timed[base]["p50"], "never slower than FP32"
    assert timed[sel["chosen"]]["ratio_to_fp32"] <= 1.0
