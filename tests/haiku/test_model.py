"""haiku_impl.model: GPT-2 initialisation, and the same outputs as the functional reference."""

from __future__ import annotations

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from functional_impl.backend import backend as functional
from functional_impl.model import layer_norm
from haiku_impl import LayerNorm, backend
from shared import kv_cache, params
from shared.backend import get_backend
from shared.config import GPT2Config
from shared.generation import Generator
from tests.support.init_statistics import CONFIG as STATISTICS
from tests.support.init_statistics import assert_gpt2_statistics

TINY = GPT2Config(n_embd=32, n_head=4, n_layer=2, n_vocab=512, n_ctx=128)
apply = jax.jit(backend.apply, static_argnames="config")
apply_functional = jax.jit(functional.apply, static_argnames="config")


@pytest.fixture(scope="module")
def tree():
    """Canonical GPT-2 weights for TINY, given to both backends."""
    return jax.jit(params.init_params, static_argnums=0)(TINY, jax.random.PRNGKey(0))


def _tokens(batch, seq, seed=1):
    tokens = jax.random.randint(jax.random.PRNGKey(seed), (batch, seq), 0, TINY.n_vocab)
    return tokens, jnp.broadcast_to(jnp.arange(seq), tokens.shape)


def test_the_registry_serves_this_backend():
    assert get_backend("haiku") is backend
    assert backend.name == "haiku"


def test_init_follows_gpt2_statistics():
    haiku_params = jax.jit(backend.init, static_argnums=0)(STATISTICS, jax.random.PRNGKey(0))
    assert_gpt2_statistics(backend.to_canonical(haiku_params, STATISTICS), STATISTICS)


def test_layer_norm_matches_the_functional_one_bitwise_in_bfloat16():
    x = jax.random.normal(jax.random.PRNGKey(0), (3, 5, 64), jnp.bfloat16) * 7 + 3
    norm = hk.without_apply_rng(hk.transform(lambda x: LayerNorm(1e-5)(x)))
    weights = norm.init(jax.random.PRNGKey(1), x)
    scale, offset = weights["layer_norm"]["scale"], weights["layer_norm"]["offset"]
    assert scale.dtype == jnp.bfloat16
    np.testing.assert_array_equal(norm.apply(weights, x), layer_norm(x, scale, offset, eps=1e-5))


def test_forward_equals_functional_on_the_same_canonical_weights(tree):
    tokens, positions = _tokens(2, 9)
    logits, _ = backend.apply(
        backend.from_canonical(tree, TINY), tokens, positions, None, config=TINY
    )
    expected, _ = apply_functional(
        functional.from_canonical(tree, TINY), tokens, positions, None, config=TINY
    )
    assert logits.shape == (2, 9, TINY.n_vocab)
    np.testing.assert_allclose(logits, expected, atol=1e-5, rtol=0)


def test_cached_forward_writes_the_same_keys_and_values_as_functional(tree):
    tokens, positions = _tokens(2, 5)
    cache = kv_cache.init_cache(TINY, 2, 16, jnp.float32)
    _, ours = backend.apply(
        backend.from_canonical(tree, TINY), tokens, positions, cache, config=TINY
    )
    _, theirs = apply_functional(
        functional.from_canonical(tree, TINY), tokens, positions, cache, config=TINY
    )
    assert int(ours.index) == int(theirs.index) == 5
    for a, b in zip(ours.k + ours.v, theirs.k + theirs.v, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)


def test_greedy_generation_gives_functional_token_ids(tree):
    prompts = [[5, 6, 7], [11, 12, 13, 14, 15, 16, 17, 18, 19], [42]]
    ours = Generator(backend, backend.from_canonical(tree, TINY), TINY).generate(prompts, 16)
    theirs = Generator(functional, functional.from_canonical(tree, TINY), TINY).generate(
        prompts, 16
    )
    assert [c.tokens for c in ours] == [c.tokens for c in theirs]
