"""Dropout (`shared.dropout`) and the functional model's training forward with it."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import functional_impl.model
import shared.attention
from functional_impl.backend import backend
from functional_impl.model import gpt2
from shared import dropout, params
from shared.apply_options import ApplyOptions
from shared.config import GPT2Config
from shared.dropout import ATTENTION, ATTENTION_OUTPUT, EMBEDDINGS, MLP_OUTPUT, Dropout, drop

CONFIG = GPT2Config(n_embd=32, n_head=4, n_layer=3, n_vocab=300, n_ctx=64)
TOKENS = jax.random.randint(jax.random.PRNGKey(1), (2, 7), 0, CONFIG.n_vocab)
POSITIONS = jnp.broadcast_to(jnp.arange(7), TOKENS.shape)


@pytest.fixture(scope="module")
def tree():
    return params.init_params(CONFIG, jax.random.PRNGKey(0))


def _logits(tree, drop_out):
    per_layer = backend.from_canonical(tree, CONFIG)
    options = ApplyOptions(dropout=drop_out)
    return backend.apply(per_layer, TOKENS, POSITIONS, None, config=CONFIG, options=options)[0]


def test_no_dropout_and_rate_zero_are_the_plain_forward(tree):
    plain = _logits(tree, None)
    np.testing.assert_array_equal(_logits(tree, Dropout(0.0, jax.random.PRNGKey(5))), plain)


def test_training_forward_differs_and_is_deterministic_for_a_key(tree):
    plain = _logits(tree, None)
    first = _logits(tree, Dropout(0.1, jax.random.PRNGKey(5)))
    again = _logits(tree, Dropout(0.1, jax.random.PRNGKey(5)))
    other = _logits(tree, Dropout(0.1, jax.random.PRNGKey(6)))
    np.testing.assert_array_equal(first, again)
    assert float(jnp.abs(first - plain).max()) > 1e-3
    assert float(jnp.abs(first - other).max()) > 1e-3


def test_about_rate_of_the_elements_are_zeroed_and_the_rest_scaled():
    x = jnp.ones((1000, 1000))
    out = drop(x, Dropout(0.1, jax.random.PRNGKey(0)), EMBEDDINGS)
    assert float(jnp.mean(out == 0)) == pytest.approx(0.1, abs=0.002)
    np.testing.assert_allclose(out[out != 0], 1 / 0.9, rtol=1e-6)
    assert float(jnp.mean(out)) == pytest.approx(1.0, abs=0.005)


def test_every_place_and_block_draws_its_own_mask():
    x, d = jnp.ones((64, 64)), Dropout(0.5, jax.random.PRNGKey(0))
    masks = [drop(x, d, place) == 0 for place in range(4)]
    masks += [drop(x, d.block(layer), place) == 0 for layer in range(3) for place in range(4)]
    for i in range(len(masks)):
        for j in range(i):
            assert bool(jnp.any(masks[i] != masks[j])), (i, j)


def test_dropout_is_applied_at_gpt2s_four_places(tree, monkeypatch):
    places = []

    def spy(x, drop_out, place):
        places.append((place, x.shape))
        return dropout.drop(x, drop_out, place)

    monkeypatch.setattr(functional_impl.model, "drop", spy)
    monkeypatch.setattr(shared.attention, "drop", spy)
    _logits(tree, Dropout(0.1, jax.random.PRNGKey(5)))
    hidden, probs = (2, 7, CONFIG.n_embd), (2, CONFIG.n_head, 7, 7)
    block = [(ATTENTION, probs), (ATTENTION_OUTPUT, hidden), (MLP_OUTPUT, hidden)]
    assert places == [(EMBEDDINGS, hidden), *block * CONFIG.n_layer]


def test_stacked_and_per_layer_blocks_draw_the_same_masks(tree):
    d = Dropout(0.1, jax.random.PRNGKey(5))
    stacked, _ = gpt2(TOKENS, POSITIONS, **tree, n_head=CONFIG.n_head, options=ApplyOptions(d))
    np.testing.assert_allclose(stacked, _logits(tree, d), atol=1e-5)


def test_dropout_passes_through_jit_with_a_static_rate(tree):
    per_layer = backend.from_canonical(tree, CONFIG)

    @jax.jit
    def forward(p, d):
        return backend.apply(p, TOKENS, POSITIONS, None, config=CONFIG, options=ApplyOptions(d))[0]

    d = Dropout(0.1, jax.random.PRNGKey(5))
    np.testing.assert_allclose(forward(per_layer, d), _logits(tree, d), atol=1e-5)
