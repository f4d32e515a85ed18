"""The preallocated KV cache every backend shares: its layout, its writing and its reordering.

Backends differ in how they hold parameters and compose layers; the cache is defined once here, and
the attention that reads it once in `shared.attention`, so all three agree.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple, TypeAlias

import jax
import jax.numpy as jnp

from shared.config import GPT2Config

LayerCache: TypeAlias = tuple[jax.Array, jax.Array]
"""One layer's (k, v) cache buffers, as `KVCache` holds them."""


class KVCache(NamedTuple):
    """Keys and values of every layer for `max_len` token slots.

    k, v:  one [batch * n_head, max_len, head_dim] array per layer (`head_rows`). Separate
           buffers, not one stacked array, so each layer's update happens in place: XLA on CPU
           copies slices of a stacked array, which made the decode step much slower. One row per
           (sequence, head), so that the attention products read the cache as stored. With slots
           before heads, XLA on CPU transposed every layer's whole cache in every step; with
           [batch, n_head] as two axes, a batch of one made it compute each layer's update twice,
           once into a copy of the cache, slowing batch-1 decoding.
    mask:  [batch, max_len] bool, False on left-padding slots (set once per batch by the driver)
    index: int32 scalar, the next slot to write; slots [0, index) are filled

    A forward pass may write at most `max_len - index` tokens: XLA clamps a write past the end
    onto the last slots, with no error. `shared.generation` sizes every cache for its prompts and
    new tokens, so only a caller of `Backend.apply` with its own cache must keep to this.
    """

    k: tuple[jax.Array, ...]
    v: tuple[jax.Array, ...]
    mask: jax.Array
    index: jax.Array


def init_cache(config: GPT2Config, batch: int, max_len: int, dtype: jnp.dtype) -> KVCache:
    shape = (batch * config.n_head, max_len, config.head_dim)
    return KVCache(
        k=tuple(jnp.zeros(shape, dtype) for _ in range(config.n_layer)),
        v=tuple(jnp.zeros(shape, dtype) for _ in range(config.n_layer)),
        mask=jnp.ones((batch, max_len), bool),
        index=jnp.zeros((), jnp.int32),
    )


def write(
    layer_k: jax.Array, layer_v: jax.Array, k: jax.Array, v: jax.Array, index: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Store new keys/values [batch, n_new, n_head, head_dim] at slot `index` of one layer's cache."""
    start = (0, index, 0)
    return (
        jax.lax.dynamic_update_slice(layer_k, head_rows(k).astype(layer_k.dtype), start),
        jax.lax.dynamic_update_slice(layer_v, head_rows(v).astype(layer_v.dtype), start),
    )


def head_rows(x: jax.Array) -> jax.Array:
    """[batch, seq, n_head, head_dim] -> [batch * n_head, seq, head_dim], the cache's layout."""
    batch, seq, n_head, head_dim = x.shape
    return x.swapaxes(1, 2).reshape(batch * n_head, seq, head_dim)


def from_head_rows(x: jax.Array, batch: int) -> jax.Array:
    """[batch * n_head, seq, head_dim] -> [batch, seq, n_head, head_dim]; undoes `head_rows`."""
    rows, seq, head_dim = x.shape
    return x.reshape(batch, rows // batch, seq, head_dim).swapaxes(1, 2)


def advance(cache: KVCache, k: Sequence[jax.Array], v: Sequence[jax.Array], n_new: int) -> KVCache:
    """The cache after a forward pass wrote `n_new` tokens into every layer's (k, v)."""
    return cache._replace(k=tuple(k), v=tuple(v), index=cache.index + n_new)


def take_rows(cache: KVCache, rows: jax.Array) -> KVCache:
    """The cache of the sequences at `rows` [n] (indices into its batch), in that order: beam
    search starts each prompt's beams as copies of its cache."""
    head_rows = _head_row_indices(cache, rows)
    return cache._replace(
        k=tuple(k[head_rows] for k in cache.k),
        v=tuple(v[head_rows] for v in cache.v),
        mask=cache.mask[rows],
    )


REORDER_CHUNK = 64
"""Slots `reorder_rows` moves at a time (`generation.SLOT_BUCKET`: its caches are multiples)."""


def reorder_rows(cache: KVCache, rows: jax.Array) -> KVCache:
    """`take_rows` for as many rows as the batch (each beam search step continues every beam
    from the cache of the beam it extends), copying only the filled slots.

    The slots are moved in place, `REORDER_CHUNK` at a time up to the one holding `index - 1`: a
    search step copies half the cache on average instead of all of it.
    """
    head_rows = _head_row_indices(cache, rows)
    max_len = cache.mask.shape[1]
    chunk = math.gcd(max_len, REORDER_CHUNK)  # chunks tile the cache exactly: none overlap

    def reorder_chunk(i: jax.Array, layers: tuple[jax.Array, ...]) -> tuple[jax.Array, ...]:
        start = i * chunk
        return tuple(
            jax.lax.dynamic_update_slice_in_dim(
                layer,
                jax.lax.dynamic_slice_in_dim(layer, start, chunk, axis=1)[head_rows],
                start,
                axis=1,
            )
            for layer in layers
        )

    filled_chunks = jnp.minimum(-(-cache.index // chunk), max_len // chunk)
    layers = jax.lax.fori_loop(0, filled_chunks, reorder_chunk, cache.k + cache.v)
    n_layer = len(cache.k)
    return cache._replace(k=layers[:n_layer], v=layers[n_layer:], mask=cache.mask[rows])


def _head_row_indices(cache: KVCache, rows: jax.Array) -> jax.Array:
    """The cache's (sequence, head) rows of the sequences at `rows`, in `head_rows` order."""
    n_head = cache.k[0].shape[0] // cache.mask.shape[0]
    return (rows[:, None] * n_head + jnp.arange(n_head)).reshape(-1)
