"""The machine's own limits, measured in the same run as the model: memory read bandwidth (the
batch-1 decode roofline) and matrix-multiply throughput (the peak for MFU where no datasheet figure
is known), plus the device's peak memory where the platform reports it."""

from __future__ import annotations

import os
import platform
from typing import Any

import jax
import jax.numpy as jnp

from shared.benchmarks.timing import best_seconds
from shared.jax_types import Device
from shared.training.metrics import PEAK_FLOPS


def device() -> Device:
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


def memory_bandwidth(megabytes: int | None = None, repeats: int = 10) -> float:
    """Bytes/s read by a matrix-vector product over a matrix far larger than the caches.

    This is exactly the access pattern of batch-1 decoding (every weight read once per token).
    """
    megabytes = megabytes or (2048 if device().platform == "gpu" else 512)
    cols = 4096
    rows = megabytes * 2**20 // (4 * cols)
    matrix = jax.random.normal(jax.random.PRNGKey(0), (rows, cols), jnp.float32)
    vector = jnp.ones((cols,), jnp.float32)
    seconds = best_seconds(jax.jit(jnp.matmul), matrix, vector, repeats=repeats)
    return matrix.nbytes / seconds


# Matrix products whose best throughput stands for the CPU's peak: square ones and GPT-2's own
# layer shapes (1024 rows). No single shape is the fastest on every CPU: on some, GPT-2's own
# shapes run faster than any square product, so the square products alone could put the training
# step's MFU above 100%.
CPU_PEAK_SHAPES = ((1024, 1024, 1024), (2048, 2048, 2048), (1024, 768, 3072), (1024, 3072, 768))


def matmul_flops(
    dtype: str = "float32", shapes: tuple[tuple[int, int, int], ...] | None = None, repeats: int = 5
) -> float:
    """FLOP/s of the fastest of some matrix products [m, k] @ [k, n] in `dtype`, each best of
    `repeats`."""
    shapes = shapes or (((8192, 8192, 8192),) if device().platform == "gpu" else CPU_PEAK_SHAPES)
    best = 0.0
    for m, k, n in shapes:
        key_a, key_b = jax.random.split(jax.random.PRNGKey(0))
        a = jax.random.normal(key_a, (m, k), dtype)
        b = jax.random.normal(key_b, (k, n), dtype)
        best = max(best, 2 * m * k * n / best_seconds(jax.jit(jnp.matmul), a, b, repeats=repeats))
    return best


def peak_flops(dtype: str) -> tuple[float, str]:
    """(FLOP/s, where it came from) for MFU: the datasheet's dense figure, else a measured matmul."""
    datasheet = PEAK_FLOPS.get(device().device_kind)
    if datasheet is not None:
        return datasheet, f"datasheet dense bf16 peak of {device().device_kind}"
    return matmul_flops(dtype), f"fastest measured {dtype} matrix product of this machine"


def peak_memory_bytes() -> int | None:
    """Peak device memory in use so far, or None where the platform does not report it (CPU)."""
    stats = device().memory_stats()
    return None if not stats else stats.get("peak_bytes_in_use")
