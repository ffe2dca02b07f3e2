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


def best_wall_cpu(fn: Callable[[], object], repeats: int, warmup: bool = True) -> tuple[float, float]:
    """(fastest wall seconds, fewest process CPU seconds) over ``repeats`` calls of ``fn``. On a shared machine the
    CPU time (all threads of this process) measures the work itself, which waiting for a core does not inflate."""
    if warmup:
        fn()
    wall, cpu = [], []
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - w0)
        cpu.append(time.process_time() - c0)
    return min(wall), min(cpu)
