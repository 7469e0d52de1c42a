"""The load bar of issue 17: 4 concurrent senders push 500 single-image studies and 20 series
of 64 slices into the node (``edgemed-run serve``, its own process), which sends one SR per
series to a real Orthanc.

Checked: 0 lost and 0 duplicated (exactly 520 SRs in Orthanc, each referencing exactly the
instances of one sent series); RSS of the node flat (the end within 10% of the value after the
first 50 studies). Reported: p50 / p99 from the last instance received to the result stored in
Orthanc (the node's latency summary), throughput, RSS. JSON in ``.benchmarks/edgemed-node/``.

    python -m pytest benchmarks/test_node_load.py -s   (python -m: the repo root on sys.path)
"""

from __future__ import annotations

import json
import os
import platform
import re
import signal
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("pynetdicom")
pytest.importorskip("highdicom")

from tests.node.kit import (NODE_AET, Model, free_port, model, node_toml,  # noqa: E402,F401
                            send_pynetdicom, series, start_orthanc, stop_orthanc, wait_for)

REPO = Path(__file__).resolve().parents[1]
RESULTS = Path(os.environ.get("EDGEMED_BENCH_RESULTS", ".benchmarks/edgemed-node"))
STUDIES, BIG, BIG_SLICES, SENDERS = 500, 20, 64, 4
RSS_TOLERANCE = 0.10


def _rss_kib(pid: int) -> int:
    m = re.search(r"VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
    return int(m.group(1)) if m else 0


def _metric(text: str, name: str) -> float | None:
    m = re.search(rf"^{re.escape(name)} ([0-9.e+-]+)$", text, re.M)
    return float(m.group(1)) if m else None


def _work() -> list[list[Any]]:
    """The 520 series, interleaved so every sender mixes small studies and big series."""
    small = [series(1, seed=10_000 + k) for k in range(STUDIES)]
    big = [series(BIG_SLICES, seed=20_000 + k) for k in range(BIG)]
    step = STUDIES // BIG
    out: list[list[Any]] = []
    for k, s in enumerate(small):
        out.append(s)
        if k % step == step - 1 and big:
            out.append(big.pop())
    return out + big


def test_node_load(tmp_path: Path, model: Model) -> None:
    port = free_port()
    orthanc = start_orthanc(tmp_path / "orthanc", {"node": [NODE_AET, "127.0.0.1", port]})
    cfg = node_toml(tmp_path, model, port=port, dest_port=orthanc.dicom, timeout=5.0,
                    retries=5, backoff=0.5, max_bytes=1 << 31)
    metrics_port = int(re.search(r"\[metrics\]\nport = (\d+)", cfg.read_text()).group(1))
    env = {**os.environ, "ORT_DISABLE_TELEMETRY": "1", "CI": "true",
           "PYTHONPATH": str(REPO / "runtimes")}
    log = open(tmp_path / "node.log", "wb")  # noqa: SIM115 - the child holds it
    proc = subprocess.Popen([sys.executable, "-m", "edgemed_runtime", "serve", str(cfg)],
                            stdout=log, stderr=log, env=env)
    try:
        wait_for(lambda: (tmp_path / "audit.jsonl").exists()
                 and b'"started"' in (tmp_path / "audit.jsonl").read_bytes(), 60)
        work = _work()
        t0 = time.monotonic()
        rss: dict[str, int] = {}
        done = {"n": 0}

        def send(s: list[Any]) -> list[int]:
            st = send_pynetdicom(s, port, calling="SENDER")
            done["n"] += 1
            if done["n"] == 50:
                rss["after_50"] = _rss_kib(proc.pid)
            return st

        with ThreadPoolExecutor(SENDERS) as ex:
            statuses = list(ex.map(send, work))
        sent_s = time.monotonic() - t0
        assert all(all(c == 0 for c in st) for st in statuses)
        total = len(work)
        wait_for(lambda: len(orthanc.find_sr()) >= total, 1800, 1.0)
        wall_s = time.monotonic() - t0
        time.sleep(5)  # a duplicate would arrive by now
        rss["end"] = _rss_kib(proc.pid)
        text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics").read().decode()
        srs = orthanc.find_sr()
        refs = set()
        for oid in srs:
            tags = orthanc.get(f"/instances/{oid}/tags?simplify")
            refs.add(tags["StudyInstanceUID"] + "/" + str(tags.get("SeriesDescription", "")))
        sources = {(s[0].StudyInstanceUID) for s in work}
        report = {
            "machine": {"cpu": platform.processor() or platform.machine(),
                        "flags": sorted(set(re.findall(r"\b(avx512_vnni|avx512f|avx2)\b",
                                                       Path("/proc/cpuinfo").read_text()))),
                        "cores": os.cpu_count()},
            "series": total, "instances": sum(len(s) for s in work), "srs_in_orthanc": len(srs),
            "studies_with_result": len({r.split("/")[0] for r in refs}),
            "send_s": round(sent_s, 1), "wall_s": round(wall_s, 1),
            "p50_s": _metric(text, 'edgemed_node_latency_seconds{quantile="0.5"}'),
            "p99_s": _metric(text, 'edgemed_node_latency_seconds{quantile="0.99"}'),
            "delivered": _metric(text, "edgemed_node_delivered_total"),
            "duplicates_received": _metric(text, "edgemed_node_duplicates_total"),
            "rss_kib": rss,
        }
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / f"node-load-{int(time.time())}.json").write_text(json.dumps(report, indent=2))
        print(json.dumps(report, indent=2))
        assert len(srs) == total and report["delivered"] == total  # 0 lost, 0 duplicated
        assert {r.split("/")[0] for r in refs} == sources
        assert rss["end"] <= rss["after_50"] * (1 + RSS_TOLERANCE)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
        stop_orthanc(orthanc)
