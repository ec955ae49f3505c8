"""Latency summaries shared by the search and encoding stages (milliseconds per query)."""

from __future__ import annotations

import json
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


def rerank_latency(candidates: str | Path, timing: dict[str, float | int | None]) -> dict[str, float | int | None]:
    """A re-ranker's latency record: its own per query (`time_each`), the first stage's median read from the
    candidates' latency file beside the run (absent for a candidate list read from a file), and their sum."""
    first_path = Path(candidates).with_suffix(".latency.json")
    first = json.loads(first_path.read_text()).get("latency_ms_median") if first_path.exists() else None
    own = timing["latency_ms_median"]
    return {"latency_queries": timing["latency_queries"], "rerank_ms_median": own,
            "rerank_ms_p95": timing["latency_ms_p95"], "first_stage_ms_median": first,
            "latency_ms_median": round(first + own, 3) if first is not None and own is not None else None}
