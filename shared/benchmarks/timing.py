"""The one timing rule every benchmark figure follows: best of several runs after a warm-up."""

from __future__ import annotations

import time
from typing import Any

import jax


def best_seconds(fn: Any, *args: Any, repeats: int) -> float:
    """Fastest of `repeats` timed calls of fn(*args), after one untimed call.

    The untimed call takes compilation, caches and the allocator's first requests; the minimum is
    the figure least disturbed by the machine's other work. JAX results are waited for; other
    libraries' calls (PyTorch, keras-hub) return when done.
    """
    jax.block_until_ready(fn(*args))
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        best = min(best, time.perf_counter() - start)
    return best
