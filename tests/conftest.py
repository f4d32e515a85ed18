"""Shared pytest fixtures."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.config import GPT2Config
from tests.support.doc_examples import RUNS_PROPERTY, Run, summary
from tests.support.openai_server import OpenAIServer

# --- Converters: the canonical tree every backend's converter tests convert. ---


@pytest.fixture(scope="session")
def canonical() -> dict:
    """GPT-2-initialised canonical weights of `tests.support.converters.CONFIG`."""
    import jax

    from shared.params import init_params
    from tests.support.converters import CONFIG

    return jax.jit(init_params, static_argnums=0)(CONFIG, jax.random.PRNGKey(1))


# --- Weights: a tiny OpenAI checkpoint and a local server standing in for OpenAI's storage. ---

TINY_SIZE = "124M"
"""The size name the tiny checkpoint is served under, so commands' default size finds it."""


@pytest.fixture(scope="session")
def tiny_config() -> GPT2Config:
    """A GPT-2 small enough for fast CPU tests, with the real vocabulary and head layout."""
    return GPT2Config(n_embd=32, n_head=4, n_layer=2, n_vocab=50257, n_ctx=128)


@pytest.fixture(scope="session")
def openai_checkpoint(tmp_path_factory: pytest.TempPathFactory, tiny_config: GPT2Config):
    """(folder `<tmp>/models/124M/`, arrays by OpenAI variable name) of a real-format TF checkpoint
    of `tiny_config`. Read-only: tests that damage files copy the folder first."""
    from tests.support.openai_checkpoint import write_openai_checkpoint

    folder = tmp_path_factory.mktemp("openai") / "models" / TINY_SIZE
    arrays = write_openai_checkpoint(folder, tiny_config, seed=0)
    return folder, arrays


@pytest.fixture(scope="session")
def openai_checkpoint_dir(openai_checkpoint) -> Path:
    """`<tmp>/models/124M/` holding OpenAI's seven files for `tiny_config`."""
    return openai_checkpoint[0]


@pytest.fixture(scope="session")
def openai_arrays(openai_checkpoint) -> dict:
    """The arrays written into `openai_checkpoint_dir`, by OpenAI variable name."""
    return openai_checkpoint[1]


@pytest.fixture
def openai_server(openai_checkpoint_dir: Path) -> Iterator[OpenAIServer]:
    """A fresh local server over `openai_checkpoint_dir`; `.base_url` is the `GPT2_BASE_URL`
    (`http://127.0.0.1:PORT/gpt-2`), and its fault knobs and request counts start clean."""
    with OpenAIServer(openai_checkpoint_dir.parents[1]) as server:
        yield server


@pytest.fixture
def openai_base_url(openai_server: OpenAIServer) -> str:
    """The base URL of `openai_server`, for code that only needs `GPT2_BASE_URL`."""
    return openai_server.base_url


@pytest.fixture
def models_dir(tmp_path: Path) -> Path:
    """An empty model cache folder (what `GPT2_MODELS_DIR` points at)."""
    folder = tmp_path / "models"
    folder.mkdir()
    return folder


_EXAMPLE_RUNS: list[Run] = []
"""The docs examples' runs, gathered from the test reports (tests/test_docs_examples.py)."""


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Gather the runs a docs-examples test reported, from this process or an xdist worker."""
    if report.when == "call":
        for key, runs in report.user_properties:
            if key == RUNS_PROPERTY:
                _EXAMPLE_RUNS.extend(Run(**run) for run in runs)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """How many README and docs examples ran, and how long each took."""
    for line in summary(_EXAMPLE_RUNS):
        terminalreporter.write_line(line)
