"""Machine description, load monitoring and the cached GEMM ceilings."""

from __future__ import annotations

import json

import pytest

from edgemed.bench import ceiling
from edgemed.bench.machine import LoadMonitor, machine_info, machine_key


def test_machine_info_names_cpu_cores_and_libraries() -> None:
    m = machine_info()
    assert m["cpu_model"] and m["logical_cores"] >= 1
    assert {"onnxruntime", "numpy"} <= set(m["libraries"])
    assert len(machine_key(2)) == 20 and machine_key(1) != machine_key(2)


def test_load_monitor_reports_other_processes() -> None:
    import time

    with LoadMonitor(interval=0.2) as mon:
        end = time.monotonic() + 0.7
        while time.monotonic() < end:  # our own work is not counted as "others"
            sum(i * i for i in range(10_000))
    r = mon.report()
    assert r.samples >= 1 and r.cores >= 1
    # CPU times tick at 10 ms: one 0.2 s sample can be off by a few ticks
    assert 0.0 <= r.others_mean_cores <= 2 * r.cores and r.others_max_cores >= r.others_mean_cores
    assert set(r.to_dict()) >= {"others_mean_cores", "others_max_cores", "steal_pct"}


def test_small_gemm_through_onnxruntime() -> None:
    c = ceiling.measure_ceilings(threads=1, shape=(64, 128, 64), reps=2)
    assert c.int8_gmacs == max(c.int8_matmulinteger_gmacs, c.int8_qdq_gmacs) > 0
    assert c.fp32_gmacs > 0 and c.for_precision("int8") == c.int8_gmacs
    assert c.for_precision("fp32") == c.fp32_gmacs


def test_ceilings_are_cached_per_machine(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ceiling, "SHAPE", (128, 256, 128))
    monkeypatch.setattr(ceiling, "BUSY_CORES", float("inf"))  # cache even on a busy machine
    first = ceiling.get_ceilings(1, cache=tmp_path)
    assert not first.cached
    data = json.loads((tmp_path / "ceilings.json").read_text())
    assert machine_key(1) in data
    again = ceiling.get_ceilings(1, cache=tmp_path)
    assert again.cached and again.int8_gmacs == first.int8_gmacs
    assert not ceiling.get_ceilings(1, cache=tmp_path, refresh=True).cached
