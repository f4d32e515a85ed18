"""The preallocated KV cache and the attention every backend shares.

Backends differ in how they hold parameters and compose layers; the cache layout, the mask rules for
left-padded batches and the softmax attention itself are defined once here, so all three agree.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp

from shared.config import GPT2Config
from shared.dropout import ATTENTION, Dropout, drop


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


def attention_mask(cache: KVCache | None, n_new: int) -> jax.Array:
    """Which key slots each of the `n_new` new query tokens may see: [batch or 1, 1, n_new, slots].

    Without a cache this is the plain causal mask. With one, query t sits at slot index + t and sees
    filled slots up to its own that hold real (non-padding) tokens.
    """
    if cache is None:
        return jnp.tril(jnp.ones((n_new, n_new), bool))[None, None]
    query_slot = cache.index + jnp.arange(n_new)[:, None]
    key_slot = jnp.arange(cache.mask.shape[1])[None, :]
    causal = key_slot <= query_slot
    return causal[None, None] & cache.mask[:, None, None, :]


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


def attention_probabilities(q: jax.Array, k: jax.Array, mask: jax.Array) -> jax.Array:
    """The softmax of scaled dot products, fp32 [batch, n_head, n_q, n_k]: how much each query
    attends to each key (0 where `mask` is False). q: [batch, n_q, n_head, head_dim]; k: [batch *
    n_head, n_k, head_dim] (`head_rows`); mask: broadcastable to [batch, n_head, n_q, n_k]."""
    batch, n_q, n_head, head_dim = q.shape
    scale = head_dim**-0.5
    scores = jnp.einsum("rqd,rkd->rqk", head_rows(q), k, preferred_element_type=jnp.float32)
    scores = (scores * scale).reshape(batch, n_head, n_q, -1)
    scores = jnp.where(mask, scores, jnp.finfo(jnp.float32).min)
    # JAX's newer softmax derivative keeps only the probabilities for the backward pass, where the
    # default one also keeps the masked scores and their exponentials, each as large, so the
    # training step needs less temporary memory and runs faster. The forward values are the same.
    with jax.softmax_custom_jvp(True):
        return jax.nn.softmax(scores, axis=-1)


def attend(
    q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array, dropout: Dropout | None = None
) -> tuple[jax.Array, jax.Array]:
    """Scaled dot-product attention with an fp32 softmax.

    q: [batch, n_q, n_head, head_dim]; k, v: [batch * n_head, n_k, head_dim] (`head_rows`);
    mask: broadcastable to [batch, n_head, n_q, n_k]. Returns the attended values [batch, n_q,
    n_head, head_dim] and the probabilities (`attention_probabilities`, before dropout).
    `dropout` (the block's, training only) drops attention probabilities.
    """
    batch, n_q, n_head, _ = q.shape
    probabilities = attention_probabilities(q, k, mask)
    weights = drop(probabilities, dropout, ATTENTION).astype(v.dtype)
    heads = jnp.einsum("rqk,rkd->rqd", weights.reshape(batch * n_head, n_q, -1), v)
    return from_head_rows(heads, batch), probabilities


def fused_attention_applies(q: jax.Array) -> bool:
    """Whether the causal attention of a training forward can run as cuDNN's fused flash kernel.

    Only on GPU, in bf16/fp16, with head sizes cuDNN takes; elsewhere (CPU, fp32) the explicit
    softmax above runs, which is also what keeps CPU results bit-identical across backends.
    """
    head_dim = q.shape[-1]
    return (
        jax.default_backend() == "gpu"
        and q.dtype in (jnp.bfloat16, jnp.float16)
        and head_dim % 8 == 0
        and head_dim <= 128
    )


def self_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    mask: jax.Array,
    layer_cache: tuple[jax.Array, jax.Array] | None,
    index: jax.Array | None,
    dropout: Dropout | None = None,
    *,
    return_probabilities: bool = False,
) -> tuple:
    """Attention of new tokens, through this layer's cache when there is one.

    Returns the attended values and the layer's updated (k, v) cache (None without a cache), and
    with `return_probabilities` the attention probabilities [batch, n_head, n_q, n_k] too (for
    interpretability; they rule out cuDNN's fused kernel, which never forms them).
    `dropout` is the block's (`Dropout.block`); None for inference.
    """
    if layer_cache is None:
        fused = fused_attention_applies(q) and (dropout is None or dropout.rate == 0)
        if fused and not return_probabilities:
            return jax.nn.dot_product_attention(
                q, k, v, is_causal=True, implementation="cudnn"
            ), None
        heads, probabilities = attend(q, head_rows(k), head_rows(v), mask, dropout)
        new_cache = None
    else:
        new_cache = write(*layer_cache, k, v, index)
        heads, probabilities = attend(q, *new_cache, mask, dropout)
    return (heads, new_cache, probabilities) if return_probabilities else (heads, new_cache)
