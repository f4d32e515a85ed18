"""The attention every backend shares: its masks for causal and left-padded batches, the fp32
softmax with its lighter derivative, and self-attention through a layer's KV cache (whose decode
steps `pallas_decode_attention` can hand to a Pallas kernel).

Backends differ in how they project queries, keys and values; what attention does with them is
defined once here, so all three agree. The cache it reads and writes is `shared.kv_cache`'s.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TypeAlias

import jax
import jax.numpy as jnp

from shared.dropout import ATTENTION, Dropout, drop
from shared.kv_cache import KVCache, LayerCache, from_head_rows, head_rows, write

AttentionResult: TypeAlias = (
    tuple[jax.Array, LayerCache | None] | tuple[jax.Array, LayerCache | None, jax.Array]
)
"""(attended values, the layer's updated cache or None), and the attention probabilities when
they were asked for."""


_PALLAS_DECODE = jax.make_user_context(default_value=False)
"""Whether decode steps attend through `shared.decode_attention`; a `jax.jit` cache key, so a
program traced with one setting is never reused under the other."""


@contextlib.contextmanager
def pallas_decode_attention(enabled: bool = True) -> Iterator[None]:
    """Inside this block, programs traced for every backend attend one new token per sequence
    through the cache with `shared.decode_attention`'s Pallas kernel instead of `attend`.

    Off by default; for timing the kernel on a CUDA GPU (elsewhere it runs interpreted, slowly).
    Forwards of several tokens (prefills, training) and probabilities asked for keep `attend`.

        with pallas_decode_attention():
            generator.generate(prompts, 64)
    """
    with _PALLAS_DECODE(enabled):
        yield


def pallas_decode_attention_enabled() -> bool:
    """Whether `pallas_decode_attention` is on here."""
    return bool(_PALLAS_DECODE.value)


def with_output(result: AttentionResult, output: jax.Array) -> AttentionResult:
    """`result` with its first element, the attended values, replaced by `output` (a projection of
    them, or the block's output): the layer cache and any probabilities pass through."""
    if len(result) == 3:
        return output, result[1], result[2]
    return output, result[1]


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


def attention_probabilities(q: jax.Array, k: jax.Array, mask: jax.Array) -> jax.Array:
    """The softmax of scaled dot products, fp32 [batch, n_head, n_q, n_k]: how much each query
    attends to each key (0 where `mask` is False). q: [batch, n_q, n_head, head_dim]; k: [batch *
    n_head, n_k, head_dim] (`kv_cache.head_rows`); mask: broadcastable to [batch, n_head, n_q,
    n_k]."""
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

    q: [batch, n_q, n_head, head_dim]; k, v: [batch * n_head, n_k, head_dim] (`kv_cache.head_rows`);
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
    layer_cache: LayerCache | None,
    index: jax.Array | None,
    dropout: Dropout | None = None,
    *,
    return_probabilities: bool = False,
) -> AttentionResult:
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
        assert index is not None, "a layer cache is written at the cache's index"
        new_cache = write(*layer_cache, k, v, index)
        one_token = q.shape[1] == 1 and dropout is None and not return_probabilities
        if one_token and pallas_decode_attention_enabled():
            from shared.decode_attention import decode_attention  # Pallas, imported when used

            return decode_attention(q, *new_cache, mask, filled=index + 1), new_cache
        heads, probabilities = attend(q, *new_cache, mask, dropout)
    return (heads, new_cache, probabilities) if return_probabilities else (heads, new_cache)
