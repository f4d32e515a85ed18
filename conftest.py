"""Options of the test suites, registered at the root so `pytest` alone knows them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Test helpers import TensorFlow, which may import Keras: keep Keras on JAX for the keras backend.
os.environ.setdefault("KERAS_BACKEND", "jax")


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
