"""JAX's persistent compilation cache, so a second `gpt2` process reuses the first one's programs."""

from __future__ import annotations

import os
from pathlib import Path

import jax
import platformdirs


def default_dir() -> Path:
    return Path(platformdirs.user_cache_dir("gpt2-jax")) / "xla"


def enable(cache_dir: str | Path | None = None) -> Path:
    """Turn the cache on (every compiled program is kept); honours JAX_COMPILATION_CACHE_DIR."""
    path = Path(cache_dir or os.environ.get("JAX_COMPILATION_CACHE_DIR") or default_dir())
    path.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return path
