"""Wall-clock timing shared by the benchmark scripts (standard library only: also runs in ``.venv-p3d``)."""
from __future__ import annotations

import statistics
import time
from typing import Callable


def sample_seconds(fn: Callable[[], object], repeats: int, warmup: bool = True) -> list[float]:
    """Seconds of ``repeats`` calls of ``fn`` (after one untimed warm-up call: caches, JIT, allocator)."""
    if warmup:
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def best_seconds(fn: Callable[[], object], repeats: int, warmup: bool = True) -> float:
    """Fastest of ``repeats`` timed calls (the least disturbed by other load on a shared machine)."""
    return min(sample_seconds(fn, repeats, warmup))


def median_seconds(fn: Callable[[], object], repeats: int, warmup: bool = True) -> float:
    """Median of ``repeats`` timed calls."""
    return statistics.median(sample_seconds(fn, repeats, warmup))
