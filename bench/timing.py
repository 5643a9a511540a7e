"""Wall-clock timing shared by the benchmarks (no heavy imports: the GPU check uses it too)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def median_time(step: Callable[[], object], repeats: int, sync: Callable[[], None] = lambda: None) -> float:
    """Median seconds of `step` over `repeats` runs after one warm-up (plans, allocations), calling
    `sync` (e.g. torch.cuda.synchronize) after each run so that queued device work is counted."""
    step()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)
