"""The persistent caches, so a second `gpt2` process reuses the first one's programs.

JAX's compilation cache keeps XLA's compiled programs; `shared.program_cache` keeps the traced ones
(in its `programs` subfolder), so a warm start neither traces nor compiles the model.
"""

from __future__ import annotations

import os
from pathlib import Path

import jax
import platformdirs

from shared import program_cache


def default_dir() -> Path:
    return Path(platformdirs.user_cache_dir("gpt2-jax")) / "xla"


def enable(cache_dir: str | Path | None = None) -> Path:
    """Turn both caches on (every program is kept); honours JAX_COMPILATION_CACHE_DIR."""
    path = Path(cache_dir or os.environ.get("JAX_COMPILATION_CACHE_DIR") or default_dir())
    path.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    program_cache.enable(path / "programs")
    return path
