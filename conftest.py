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


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """The oracle needs PyTorch and transformers; only `nox -s oracle` (--oracle) collects it.

    None (not False) elsewhere, so pytest's own --ignore still applies.
    """
    if collection_path.name == "oracle" and not config.getoption("--oracle"):
        return True
    return None
