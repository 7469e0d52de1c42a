"""Health and Prometheus metrics on loopback: ``GET /metrics`` (text format 0.0.4) and
``GET /healthz`` (``ok``), served by a thread of the node on 127.0.0.1 only."""

from __future__ import annotations

import threading
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

import numpy as np

COUNTERS = ("received", "rejected_full", "series_grouped", "processed", "skipped", "failed",
            "delivered", "dead_letter", "duplicates", "late", "watchdog_restarts", "swaps",
            "swaps_refused")
QUANTILES = (0.5, 0.9, 0.99)


class Metrics:
    """Counters, a queue-depth gauge (a callable) and the latency window (last 4096 series:
    last instance received -> result stored at the destination, seconds)."""

    def __init__(self, depth: Callable[[], int] = lambda: 0) -> None:
        self._lock = threading.Lock()
        self.counts = {k: 0 for k in COUNTERS}
        self.latencies: deque[float] = deque(maxlen=4096)
        self.depth = depth

    def inc(self, name: str, n: int = 1) -> None:
        """Add ``n`` to counter ``name``."""
        with self._lock:
            self.counts[name] += n

    def latency(self, seconds: float) -> None:
        """Record one series' latency."""
        with self._lock:
            self.latencies.append(seconds)

    def quantiles(self) -> dict[float, float]:
        """The latency quantiles of the window (empty when nothing was delivered yet)."""
        with self._lock:
            lat = np.array(self.latencies, dtype=np.float64)
        return {} if not lat.size else {q: float(np.quantile(lat, q)) for q in QUANTILES}

    def text(self) -> str:
        """The Prometheus exposition text."""
        with self._lock:
            counts = dict(self.counts)
            n = len(self.latencies)
            total = float(sum(self.latencies))
        lines = []
        for k, v in counts.items():
            lines += [f"# TYPE edgemed_node_{k}_total counter", f"edgemed_node_{k}_total {v}"]
        lines += ["# TYPE edgemed_node_queue_depth gauge", f"edgemed_node_queue_depth {self.depth()}",
                  "# TYPE edgemed_node_latency_seconds summary"]
        for q, v in self.quantiles().items():
            lines.append(f'edgemed_node_latency_seconds{{quantile="{q}"}} {v:.6f}')
        lines += [f"edgemed_node_latency_seconds_count {n}",
                  f"edgemed_node_latency_seconds_sum {total:.6f}"]
        return "\n".join(lines) + "\n"


def serve_metrics(metrics: Metrics, port: int) -> ThreadingHTTPServer:
    """Start the endpoint on 127.0.0.1:``port`` (0: any free port) in a daemon thread."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            if self.path == "/metrics":
                body, ctype = metrics.text().encode(), "text/plain; version=0.0.4"
            elif self.path == "/healthz":
                body, ctype = b"ok\n", "text/plain"
            else:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            return

    srv = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=srv.serve_forever, name="edgemed-metrics", daemon=True).start()
    return srv
