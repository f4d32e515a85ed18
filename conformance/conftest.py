"""Fixtures of the conformance suite: every registered backend against the functional reference,
on a tiny config and at the real 124M shapes, each measured difference recorded for the report."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np
import pytest

from conformance.report import Report
from shared.backend import backend_names, get_backend
from shared.config import MODEL_SIZES, GPT2Config
from shared.params import canonical_shapes, init_params, unflatten
from shared.weights import load_hf, load_tf_checkpoint
from tests.support.hf_checkpoint import write_hf_checkpoint
from tests.support.openai_checkpoint import write_openai_checkpoint

TINY = GPT2Config(n_embd=32, n_head=4, n_layer=2, n_vocab=512, n_ctx=128)
CONFIGS = {"tiny": TINY, "124M": MODEL_SIZES["124M"]}


_REPORT = Report()


@pytest.fixture(scope="session")
def report() -> Report:
    return _REPORT


def pytest_configure(config: pytest.Config) -> None:
    """The report's rows are gathered in one process: refuse to split that run over xdist workers."""
    if config.getoption("--conformance-report") and getattr(config.option, "numprocesses", None):
        raise pytest.UsageError(
            "--conformance-report gathers its rows in one process; run it without -n"
        )


def pytest_sessionfinish(session: pytest.Session) -> None:
    folder = session.config.getoption("--conformance-report")
    if folder and _REPORT.rows:
        _REPORT.write(folder)


@pytest.fixture(params=backend_names())
def backend(request):
    return get_backend(request.param)


REFERENCE = "functional"
compared_with_reference = pytest.mark.parametrize(
    "backend", [name for name in backend_names() if name != REFERENCE], indirect=True
)
"""For the checks of a backend against the reference, which on the reference itself would
measure 0 and report a pass that proves nothing."""


@pytest.fixture(scope="session")
def reference():
    return get_backend(REFERENCE)


class ReferenceResults:
    """The reference's half of a check, computed once for all the backends compared with it (at
    124M it is most of a check's time). Tests run config by config, backend after backend, so
    one result is kept: a 124M gradient tree is half a gigabyte."""

    def __init__(self) -> None:
        self._key: object = None
        self._value: object = None

    def get(self, key: object, compute: Callable[[], Any]) -> Any:
        if key != self._key:
            self._key, self._value = None, None  # free the last result before computing
            self._key, self._value = key, compute()
        return self._value


@pytest.fixture(scope="module")
def reference_results() -> ReferenceResults:
    return ReferenceResults()


@pytest.fixture(params=list(CONFIGS))
def config_name(request) -> str:
    return request.param


@pytest.fixture
def config(config_name) -> GPT2Config:
    return CONFIGS[config_name]


@functools.cache
def canonical_tree(config: GPT2Config, seed: int = 0) -> dict:
    """The shared starting point: a GPT-2-initialised canonical tree (cached per config)."""
    return jax.jit(lambda key: init_params(config, key))(jax.random.PRNGKey(seed))


@functools.cache
def lively_tree(config: GPT2Config, seed: int = 0) -> dict:
    """Random weights at the scale a trained model works at, where `canonical_tree`'s GPT-2 init
    attends almost uniformly and predicts almost flat distributions: every projection keeps its
    input's scale, positions weigh as much as tokens, and next-token distributions are sharp.
    A mistake in which slots attention sees, or in the positions tokens get, then moves the
    logits far past rounding."""
    rng = np.random.default_rng(seed)
    flat = {}
    for path, shape in canonical_shapes(config).items():
        if path.endswith("/w"):  # [layer, in, out]: unit-scale inputs give unit-scale outputs
            flat[path] = rng.normal(0.0, shape[-2] ** -0.5, shape)
        elif path.endswith("/g"):
            flat[path] = rng.normal(1.0, 0.1, shape)
        elif path.endswith("/b"):
            flat[path] = rng.normal(0.0, 0.1, shape)
        else:  # wte, wpe: logits of a few units, where fp32 rounds to well under 1e-5
            flat[path] = rng.normal(0.0, 0.5, shape)
    return unflatten({path: array.astype(np.float32) for path, array in flat.items()})


@pytest.fixture
def canonical(config) -> dict:
    return canonical_tree(config)


@pytest.fixture
def tiny_params(backend):
    return backend.from_canonical(canonical_tree(TINY), TINY)


@pytest.fixture(scope="session")
def openai_files(tmp_path_factory) -> tuple[Path, dict[str, np.ndarray]]:
    """(folder, arrays by OpenAI variable name) of a real-format OpenAI checkpoint of TINY."""
    folder = tmp_path_factory.mktemp("openai") / "124M"
    return folder, write_openai_checkpoint(folder, TINY, seed=3)


@pytest.fixture(scope="session")
def openai_checkpoint(openai_files) -> tuple[dict, GPT2Config]:
    """(canonical tree, config) read from `openai_files` by `shared.weights`."""
    return load_tf_checkpoint(openai_files[0])


@pytest.fixture(scope="session")
def hf_format_checkpoint(openai_files, tmp_path_factory) -> tuple[dict, GPT2Config]:
    """(canonical tree, config) read by `shared.weights` from the arrays of `openai_files` written
    as `GPT2LMHeadModel.save_pretrained` writes them (`tests.support.hf_checkpoint`)."""
    folder = write_hf_checkpoint(tmp_path_factory.mktemp("hf"), openai_files[1], TINY)
    return load_hf(folder)
