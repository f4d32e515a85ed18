"""The shared next-token loss over every backend: value, masking and gradients."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conformance.conftest import TINY
from shared.loss import language_model_loss, next_token_loss


def test_loss_matches_a_numpy_cross_entropy():
    logits = jax.random.normal(jax.random.PRNGKey(0), (2, 5, 11))
    targets = jax.random.randint(jax.random.PRNGKey(1), (2, 5), 0, 11)
    x = np.asarray(logits, np.float64)
    log_probs = x - np.log(np.exp(x).sum(-1, keepdims=True))
    expected = -np.take_along_axis(log_probs, np.asarray(targets)[..., None], -1).mean()
    assert float(next_token_loss(logits, targets)) == pytest.approx(expected, rel=1e-5)


def test_the_gradient_is_softmax_minus_one_hot():
    logits = jax.random.normal(jax.random.PRNGKey(0), (2, 5, 11))
    targets = jax.random.randint(jax.random.PRNGKey(1), (2, 5), 0, 11)
    gradient = jax.grad(next_token_loss)(logits, targets)
    x = np.asarray(logits, np.float64)
    softmax = np.exp(x) / np.exp(x).sum(-1, keepdims=True)
    expected = (softmax - np.eye(11)[np.asarray(targets)]) / targets.size
    np.testing.assert_allclose(gradient, expected, atol=1e-7)


def test_a_target_outside_the_vocabulary_gives_nan():
    logits = jnp.zeros((1, 3, 5))
    assert np.isnan(next_token_loss(logits, jnp.asarray([[1, 5, 2]])))
    assert np.isnan(next_token_loss(logits, jnp.asarray([[1, -1, 2]])))
    assert np.isfinite(next_token_loss(logits, jnp.asarray([[1, 4, 0]])))


def test_masked_positions_do_not_count():
    logits = jax.random.normal(jax.random.PRNGKey(0), (1, 4, 7))
    targets = jnp.asarray([[1, 2, 3, 4]])
    mask = jnp.asarray([[True, True, False, False]])
    assert float(next_token_loss(logits, targets, mask)) == pytest.approx(
        float(next_token_loss(logits[:, :2], targets[:, :2])), rel=1e-6
    )


def test_fresh_model_loss_is_near_uniform_and_gradients_are_finite(backend, tiny_params):
    tokens = jax.random.randint(jax.random.PRNGKey(2), (2, 16), 0, TINY.n_vocab)
    loss, grads = jax.value_and_grad(language_model_loss, argnums=1)(
        backend, tiny_params, tokens, config=TINY
    )
    assert float(loss) == pytest.approx(np.log(TINY.n_vocab), rel=0.05)
    assert all(bool(jnp.isfinite(g).all()) for g in jax.tree.leaves(grads))
    assert any(float(jnp.abs(g).max()) > 0 for g in jax.tree.leaves(grads))
