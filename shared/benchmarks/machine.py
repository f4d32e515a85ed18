"""The machine's own limits, measured in the same run as the model: memory read bandwidth (the
batch-1 decode roofline) and matrix-multiply throughput (the peak for MFU where no datasheet figure
is known), plus the device's peak memory where the platform reports it."""

from __future__ import annotations

import os
import platform
import time
from typing import Any

import jax
import jax.numpy as jnp

from shared.training.metrics import PEAK_FLOPS


def device() -> jax.Device:
    return jax.devices()[0]


def description() -> dict[str, Any]:
    dev = device()
    return {
        "device": dev.device_kind,
        "platform": dev.platform,
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "jax": jax.__version__,
    }


def _best_seconds(fn: Any, *args: Any, repeats: int) -> float:
    jax.block_until_ready(fn(*args))
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        best = min(best, time.perf_counter() - start)
    return best


def memory_bandwidth(megabytes: int | None = None, repeats: int = 10) -> float:
    """Bytes/s read by a matrix-vector product over a matrix far larger than the caches.

    This is exactly the access pattern of batch-1 decoding (every weight read once per token).
    """
    megabytes = megabytes or (2048 if device().platform == "gpu" else 512)
    cols = 4096
    rows = megabytes * 2**20 // (4 * cols)
    matrix = jax.random.normal(jax.random.PRNGKey(0), (rows, cols), jnp.float32)
    vector = jnp.ones((cols,), jnp.float32)
    seconds = _best_seconds(jax.jit(jnp.matmul), matrix, vector, repeats=repeats)
    return matrix.nbytes / seconds


def matmul_flops(dtype: str = "float32", size: int | None = None, repeats: int = 5) -> float:
    """FLOP/s of one large square matrix product in `dtype`."""
    size = size or (8192 if device().platform == "gpu" else 2048)
    key_a, key_b = jax.random.split(jax.random.PRNGKey(0))
    a = jax.random.normal(key_a, (size, size), dtype)
    b = jax.random.normal(key_b, (size, size), dtype)
    return 2 * size**3 / _best_seconds(jax.jit(jnp.matmul), a, b, repeats=repeats)


def peak_flops(dtype: str) -> tuple[float, str]:
    """(FLOP/s, where it came from) for MFU: the datasheet's dense figure, else a measured matmul."""
    datasheet = PEAK_FLOPS.get(device().device_kind)
    if datasheet is not None:
        return datasheet, f"datasheet dense bf16 peak of {device().device_kind}"
    return matmul_flops(dtype), f"measured {dtype} matmul peak of this machine"


def peak_memory_bytes() -> int | None:
    """Peak device memory in use so far, or None where the platform does not report it (CPU)."""
    stats = device().memory_stats()
    return None if not stats else stats.get("peak_bytes_in_use")
