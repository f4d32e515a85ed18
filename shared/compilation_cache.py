"""The persistent caches, so a second `gpt2` process reuses the first one's programs.

JAX's compilation cache keeps XLA's compiled programs; `shared.program_cache` keeps the traced ones
(in its `programs` subfolder), so a warm start neither traces nor compiles the model.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import jax
import platformdirs

from shared import program_cache

logger = logging.getLogger(__name__)


def folder(cache_dir: str | Path | None = None) -> Path:
    """The folder `enable` uses: `cache_dir`, else JAX_COMPILATION_CACHE_DIR, else the user's
    cache folder."""
    default = Path(platformdirs.user_cache_dir("gpt2-jax")) / "xla"
    return Path(cache_dir or os.environ.get("JAX_COMPILATION_CACHE_DIR") or default)


def programs_dir(path: Path) -> Path:
    """Where `shared.program_cache` keeps the traced programs of the cache folder `path`."""
    return path / "programs"


def enable(cache_dir: str | Path | None = None) -> Path | None:
    """Turn both caches on (every program is kept); honours JAX_COMPILATION_CACHE_DIR.

    A folder that cannot be made leaves them off, with a warning: the run is only slower.
    """
    path = folder(cache_dir)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        logger.warning(
            "gpt2: warning: cannot use the cache folder %s (%s), so programs are compiled "
            "afresh; set JAX_COMPILATION_CACHE_DIR to a folder you can write to.",
            path,
            err,
        )
        return None
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    program_cache.enable(programs_dir(path))
    return path
