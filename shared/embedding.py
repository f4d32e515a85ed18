"""The embedding lookup of the functional and haiku backends, matching Keras' `Embedding`."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def lookup(table: jax.Array, ids: jax.Array) -> jax.Array:
    """Rows `ids` of `table`, and NaN rows for ids outside it: JAX's indexing would clamp those to
    the last row, silently, where Keras' `Embedding` gives NaN, so the backends would disagree."""
    return jnp.take(table, ids, axis=0, mode="fill")
