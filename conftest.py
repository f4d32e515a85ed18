"""Options of the test suites, registered at the root so `pytest` alone knows them."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest

# Test helpers import TensorFlow, which may import Keras: keep Keras on JAX for the keras backend.
os.environ.setdefault("KERAS_BACKEND", "jax")

# The suite compiles hundreds of small programs and runs few of them for long, so most of its
# time is XLA:CPU compiling. LLVM's first optimisation level (XLA's default is the third) compiles
# about a quarter faster. It changes the machine code of XLA's own kernels, not the program XLA
# builds (a fused multiply-add may round a last bit differently, as on another CPU), and every
# comparison in the suite runs under it on both sides. Set here, before JAX starts, so every
# worker and every `gpt2` process a test starts inherits it; a level set beforehand is kept.
LLVM_LEVEL = "--xla_backend_optimization_level"
if LLVM_LEVEL not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {LLVM_LEVEL}=1".strip()

# Tests that run a `gpt2` command (in-process or as a subprocess) turn on the persistent caches;
# unless a folder is chosen, they fill one folder made for this run (the xdist workers, started
# later, inherit it) instead of the user's own cache. The process that made it removes it.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _run_cache = tempfile.mkdtemp(prefix="gpt2-tests-xla-")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _run_cache
    atexit.register(shutil.rmtree, _run_cache, ignore_errors=True)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--conformance-report", default=None, metavar="DIR",
        help="write conformance.md and conformance.json (measured differences) into DIR",
    )  # fmt: skip
    parser.addoption(
        "--oracle", action="store_true", help="also run conformance/oracle (needs transformers)"
    )
    parser.addoption(
        "--bench", action="store_true", help="also run conformance/bench (minutes; `nox -s bench`)"
    )


# Folders collected only when asked for: the oracle needs PyTorch and transformers, and the
# benchmarks take minutes and measure rather than check.
OPT_IN_FOLDERS = {"oracle": "--oracle", "bench": "--bench"}


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """Skip an opt-in folder unless its option is given.

    None (not False) elsewhere, so pytest's own --ignore still applies.
    """
    option = OPT_IN_FOLDERS.get(collection_path.name)
    if option and not config.getoption(option):
        return True
    return None
