"""The embedding lookup of the functional and haiku backends, matching Keras' `Embedding`."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from shared.quantization import QuantizedWeight, Weight


def lookup(table: Weight, ids: jax.Array) -> jax.Array:
    """Rows `ids` of `table`, and NaN rows for ids outside it: JAX's indexing would clamp those to
    the last row, silently, where Keras' `Embedding` gives NaN, so the backends would disagree.
    An int8 table's rows are scaled by their own scales (NaN too outside it)."""
    if isinstance(table, QuantizedWeight):
        return lookup(table.values, ids).astype(table.scale.dtype) * lookup(table.scale, ids)
    return jnp.take(table, ids, axis=0, mode="fill")
