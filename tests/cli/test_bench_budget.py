"""bench enforces a budget only when asked, and says where it came from."""

from __future__ import annotations

from typing import Any

from edgemed.cli.bench import budget_verdict


def _data(p50: float, exceeded: bool) -> dict[str, Any]:
    return {"candidates": {"edgemed": {"latency_ms": {"p50": p50}}},
            "budget": {"checked": True, "target": "cpu-x86", "exceeded": exceeded,
                       "reasons": ["p50 latency > budget"] if exceeded else []}}


def test_profile_budget_is_reported_not_enforced_by_default() -> None:
    b = budget_verdict(_data(500.0, True), None, False)
    assert b["exceeded"] and not b["enforced"] and b["source"] == "target profile cpu-x86 [budget]"


def test_enforce_budget_enforces_the_profiles() -> None:
    b = budget_verdict(_data(500.0, True), None, True)
    assert b["exceeded"] and b["enforced"]


def test_budget_ms_is_the_users_and_always_enforced() -> None:
    b = budget_verdict(_data(12.5, False), 10.0, False)
    assert b["enforced"] and b["exceeded"] and b["source"] == "--budget-ms"
    assert "12.50 ms > budget 10.0 ms" in b["reasons"][0]
    ok = budget_verdict(_data(8.0, False), 10.0, False)
    assert ok["enforced"] and not ok["exceeded"] and ok["reasons"] == []


def test_no_target_no_budget() -> None:
    b = budget_verdict({"candidates": {}, "budget": {"checked": False, "why": "no target"}},
                       None, True)
    assert not b["checked"] and not b["enforced"]
