"""The shared position-wise linear layer: the same function as the 3-D product it replaces."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from shared.linear import linear, over_rows


@pytest.mark.parametrize("shape", [(2, 5, 8), (1, 1, 8), (8,), (3, 2, 4, 8)])
def test_linear_matches_the_product_over_any_leading_axes(shape: tuple[int, ...]) -> None:
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    x = jax.random.normal(keys[0], shape)
    w, b = jax.random.normal(keys[1], (8, 6)), jax.random.normal(keys[2], (6,))
    out = linear(x, w, b)
    assert out.shape == (*shape[:-1], 6)
    np.testing.assert_allclose(out, jnp.einsum("...i,io->...o", x, w) + b, rtol=1e-5, atol=1e-5)


def test_linear_gradients_match_the_product() -> None:
    keys = jax.random.split(jax.random.PRNGKey(1), 4)
    x, w = jax.random.normal(keys[0], (2, 5, 8)), jax.random.normal(keys[1], (8, 6))
    b, g = jax.random.normal(keys[2], (6,)), jax.random.normal(keys[3], (2, 5, 6))

    def product(x, w, b):
        return jnp.sum(g * (jnp.einsum("bti,io->bto", x, w) + b))

    got = jax.grad(lambda *a: jnp.sum(g * linear(*a)), argnums=(0, 1, 2))(x, w, b)
    want = jax.grad(product, argnums=(0, 1, 2))(x, w, b)
    for got_grad, want_grad in zip(got, want, strict=True):
        np.testing.assert_allclose(got_grad, want_grad, rtol=1e-5, atol=1e-5)


def test_over_rows_sees_one_matrix_of_rows() -> None:
    seen = []
    out = over_rows(lambda rows: seen.append(rows.shape) or rows[:, :2], jnp.ones((3, 4, 5)))
    assert seen == [(12, 5)]
    assert out.shape == (3, 4, 2)
