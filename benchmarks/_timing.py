"""What every benchmark here times with: compile first, then the median of
`repeats` calls, each waited for with `jax.block_until_ready`."""

import statistics
import time

import jax


def median_time(fn, repeats: int) -> float:
    """Seconds per call of `fn` (no arguments), after one warm-up call."""
    jax.block_until_ready(fn())  # compile
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return statistics.median(times)
