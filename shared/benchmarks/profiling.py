"""Profiler traces of warm runs, for `gpt2 bench --profile`: where a figure misses its target, the
trace shows which kernels a decode step or a training step spends its time in."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import jax


@contextlib.contextmanager
def traced(folder: Path, name: str) -> Iterator[None]:
    """Record what runs inside into a `jax.profiler` trace in folder/name (TensorBoard's profile
    plugin reads it; perfetto_trace.json.gz opens in ui.perfetto.dev). Only warm programs should
    run inside, so the trace holds no compilation."""
    with (
        jax.profiler.trace(folder / name, create_perfetto_trace=True),
        jax.profiler.TraceAnnotation(name),
    ):
        yield
