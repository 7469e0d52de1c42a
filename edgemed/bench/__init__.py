"""Benchmarking: timing harness (interleaved candidates), peers, machine ceilings, reports."""

from .timing import LatencyStats, interleaved_latency

__all__ = ["LatencyStats", "interleaved_latency"]
