"""`ApplyOptions`, the options of a forward pass: flags static under jit, the dropout key traced."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from functional_impl.backend import backend
from shared.apply_options import ApplyOptions
from shared.config import GPT2Config
from shared.dropout import Dropout
from shared.loss import language_model_loss

CONFIG = GPT2Config(n_embd=32, n_head=4, n_layer=2, n_vocab=300, n_ctx=64)
TOKENS = jax.random.randint(jax.random.PRNGKey(1), (2, 7), 0, CONFIG.n_vocab)
POSITIONS = jnp.broadcast_to(jnp.arange(7), TOKENS.shape)


def test_the_dropout_key_is_the_only_data():
    key = jax.random.PRNGKey(5)
    options = ApplyOptions(Dropout(0.1, key), remat=True, last_only=True)
    (leaf,) = jax.tree.leaves(options)
    np.testing.assert_array_equal(leaf, key)
    assert jax.tree.leaves(ApplyOptions(output="attentions")) == []


def test_a_new_key_reuses_the_compiled_forward_and_new_flags_compile_anew():
    params = backend.init(CONFIG, jax.random.PRNGKey(0))
    traces = []

    @jax.jit
    def forward(params, options):
        traces.append(options)
        return backend.apply(params, TOKENS, POSITIONS, None, config=CONFIG, options=options)[0]

    first = forward(params, ApplyOptions(Dropout(0.1, jax.random.PRNGKey(5))))
    second = forward(params, ApplyOptions(Dropout(0.1, jax.random.PRNGKey(6))))
    assert len(traces) == 1
    assert float(jnp.abs(first - second).max()) > 1e-3
    forward(params, ApplyOptions(Dropout(0.1, jax.random.PRNGKey(5)), remat=True))
    assert len(traces) == 2


def test_options_without_dropout_are_a_valid_static_argument():
    assert hash(ApplyOptions(last_only=True)) == hash(ApplyOptions(last_only=True))
    assert ApplyOptions(output="attentions") != ApplyOptions(output="hidden_states")


def test_an_unknown_output_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="returns one of logits, hidden_states, attentions; got"):
        ApplyOptions(output="logit")


def test_the_loss_refuses_options_that_do_not_give_every_positions_logits():
    params = backend.init(CONFIG, jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="The loss reads the logits of every position"):
        language_model_loss(
            backend, params, TOKENS, config=CONFIG, options=ApplyOptions(last_only=True)
        )
