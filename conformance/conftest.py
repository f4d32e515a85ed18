"""Fixtures of the conformance suite: every registered backend, on a tiny config and at 124M shapes."""

from __future__ import annotations

import jax
import pytest

from shared.backend import backend_names, get_backend
from shared.config import MODEL_SIZES, GPT2Config

TINY = GPT2Config(n_embd=32, n_head=4, n_layer=2, n_vocab=512, n_ctx=128)


@pytest.fixture(params=backend_names())
def backend(request):
    return get_backend(request.param)


@pytest.fixture(scope="session")
def reference():
    return get_backend("functional")


@pytest.fixture(params=["tiny", "124M"])
def config(request):
    return TINY if request.param == "tiny" else MODEL_SIZES["124M"]


@pytest.fixture
def tiny_params(backend):
    return backend.init(TINY, jax.random.PRNGKey(0))
