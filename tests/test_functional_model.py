"""functional_impl: the stacked canonical tree (lax.scan) and per-layer blocks (unrolled) agree."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from functional_impl.backend import backend
from functional_impl.model import gpt2, layer_norm
from shared import kv_cache, params
from shared.activations import gelu
from shared.apply_options import ApplyOptions
from shared.config import GPT2Config
from shared.dropout import Dropout

CONFIG = GPT2Config(n_embd=32, n_head=4, n_layer=3, n_vocab=300, n_ctx=64)


def test_gelu_is_the_tanh_approximation():
    x = jnp.asarray([-3.0, -1.0, 0.0, 0.5, 2.0])
    np.testing.assert_allclose(gelu(x), jax.nn.gelu(x, approximate=True), atol=1e-6)


def test_layer_norm_uses_eps_and_affine_parameters():
    x = jnp.asarray([[1.0, 2.0, 3.0, 4.0]])
    out = layer_norm(x, g=jnp.full(4, 2.0), b=jnp.ones(4), eps=1e-5)
    expected = 2 * (x - 2.5) / np.sqrt(1.25 + 1e-5) + 1
    np.testing.assert_allclose(out, expected, atol=1e-6)


def test_stacked_and_per_layer_blocks_give_the_same_logits_and_cache():
    tree = params.init_params(CONFIG, jax.random.PRNGKey(0))
    tokens = jax.random.randint(jax.random.PRNGKey(1), (2, 7), 0, CONFIG.n_vocab)
    positions = jnp.broadcast_to(jnp.arange(7), tokens.shape)
    per_layer = backend.from_canonical(tree, CONFIG)
    stacked_logits, _ = gpt2(tokens, positions, **tree, n_head=4)
    unrolled_logits, _ = backend.apply(per_layer, tokens, positions, None, config=CONFIG)
    np.testing.assert_allclose(stacked_logits, unrolled_logits, atol=1e-5)
    cache = kv_cache.init_cache(CONFIG, 2, 16, jnp.float32)
    _, stacked_cache = gpt2(tokens, positions, **tree, n_head=4, cache=cache)
    _, unrolled_cache = backend.apply(per_layer, tokens, positions, cache, config=CONFIG)
    for a, b in zip(
        stacked_cache.k + stacked_cache.v, unrolled_cache.k + unrolled_cache.v, strict=True
    ):
        np.testing.assert_allclose(a, b, atol=1e-6)
    assert int(stacked_cache.index) == int(unrolled_cache.index) == 7


def test_remat_over_the_stacked_tree_gives_the_unrolled_gradients():
    """The `lax.scan` path checkpoints its scanned layer (the layer index traced, not static)."""
    tree = params.init_params(CONFIG, jax.random.PRNGKey(0))
    tokens = jax.random.randint(jax.random.PRNGKey(1), (2, 7), 0, CONFIG.n_vocab)
    positions = jnp.broadcast_to(jnp.arange(7), tokens.shape)
    dropout = Dropout(0.1, jax.random.PRNGKey(2))

    def loss(tree, remat):
        options = ApplyOptions(dropout=dropout, remat=remat)
        logits, _ = gpt2(tokens, positions, **tree, n_head=4, options=options)
        return jnp.mean(logits**2)

    gradient = jax.jit(jax.grad(loss), static_argnums=1)
    stacked = gradient(tree, True)
    unrolled = params.stack_blocks(gradient(params.unstack_blocks(tree), False))
    for a, b in zip(jax.tree.leaves(stacked), jax.tree.leaves(unrolled), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    products = [
        gradient.lower(tree, remat).compile().as_text().count(" dot(") for remat in (False, True)
    ]
    assert products[1] > products[0]  # the scanned layer runs again in the backward pass


def test_backend_round_trip_to_canonical_is_exact():
    tree = params.init_params(CONFIG, jax.random.PRNGKey(3))
    back = backend.to_canonical(backend.from_canonical(tree, CONFIG), CONFIG)
    flat, flat_back = params.flatten(tree), params.flatten(back)
    assert flat.keys() == flat_back.keys()
    for path in flat:
        np.testing.assert_array_equal(flat[path], flat_back[path])
