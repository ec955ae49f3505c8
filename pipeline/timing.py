"""Latency summaries shared by the search and encoding stages (milliseconds per query)."""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable, Iterable
from pathlib import Path


def cpu_name() -> str:
    """The CPU model, recorded beside every latency so that tables say what machine they describe."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "cpu"


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile of a non-empty list."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def time_each(items: Iterable, work: Callable) -> dict[str, float | int | None]:
    """Run `work(item)` once per item; median and p95 wall time in ms (None when there were none)."""
    timings = []
    for item in items:
        tick = time.perf_counter()
        work(item)
        timings.append(1000 * (time.perf_counter() - tick))
    if not timings:
        return {"latency_queries": 0, "latency_ms_median": None, "latency_ms_p95": None}
    return {"latency_queries": len(timings), "latency_ms_median": round(statistics.median(timings), 3),
            "latency_ms_p95": round(percentile(timings, 95), 3)}
