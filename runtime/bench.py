"""Latency measurement shared by ``python cli.py bench`` and the benchmark scripts (no torch here)."""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Sequence


@dataclass(frozen=True)
class Latency:
    """Per-call latency percentiles (ms) and throughput (images/s at the median) for one batch size."""

    batch_size: int
    runs: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    images_per_s: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default), without numpy."""
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    low, high = math.floor(pos), math.ceil(pos)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def time_calls(fn: Callable[[], Any], runs: int, warmup: int = 3) -> list[float]:
    """Seconds per call of ``fn``, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def latency(fn: Callable[[], Any], batch_size: int, runs: int, warmup: int = 3) -> Latency:
    times = time_calls(fn, runs, warmup)
    p50 = percentile(times, 50)
    return Latency(batch_size, runs, 1e3 * p50, 1e3 * percentile(times, 90), 1e3 * percentile(times, 99),
                   1e3 * sum(times) / len(times), batch_size / p50)
