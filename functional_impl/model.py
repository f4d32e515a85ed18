"""GPT-2 as pure functions of the canonical parameter tree, in the manner of picoGPT.

Each function is named after the math it computes and takes its parameters as keyword arguments
named like the checkpoint's tensors, so it reads against the paper line by line. Shapes: x is
[batch, seq, n_embd]; blocks are stacked on a leading layer axis and run with `lax.scan`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp

from shared import attention, kv_cache
from shared.activations import gelu
from shared.apply_options import ApplyOptions
from shared.attention import AttentionResult
from shared.config import check_tokens
from shared.dropout import ATTENTION_OUTPUT, EMBEDDINGS, MLP_OUTPUT, Dropout, drop
from shared.embedding import lookup
from shared.kv_cache import KVCache, LayerCache
from shared.linear import linear
from shared.logits import model_output


def layer_norm(x: jax.Array, g: jax.Array, b: jax.Array, eps: float = 1e-5) -> jax.Array:
    """Normalise the last axis with fp32 statistics, then scale and shift."""
    x32 = x.astype(jnp.float32)
    mean = jnp.mean(x32, axis=-1, keepdims=True)
    variance = jnp.var(x32, axis=-1, keepdims=True)
    return ((x32 - mean) * jax.lax.rsqrt(variance + eps)).astype(x.dtype) * g + b


def ffn(x: jax.Array, c_fc: dict, c_proj: dict) -> jax.Array:
    """Position-wise MLP: n_embd -> 4*n_embd -> GELU -> n_embd."""
    return linear(gelu(linear(x, **c_fc)), **c_proj)


def mha(
    x: jax.Array,
    c_attn: dict,
    c_proj: dict,
    *,
    n_head: int,
    mask: jax.Array,
    layer_cache: LayerCache | None,
    index: jax.Array | None,
    dropout: Dropout | None = None,
    return_probabilities: bool = False,
) -> AttentionResult:
    """Causal multi-head self-attention with fused QKV projection: (output, layer cache), and
    with `return_probabilities` the attention probabilities [batch, n_head, seq, keys]."""
    batch, seq, n_embd = x.shape
    qkv = linear(x, **c_attn).reshape(batch, seq, 3, n_head, n_embd // n_head)
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
    result = attention.self_attention(
        q, k, v, mask, layer_cache, index, dropout, return_probabilities=return_probabilities
    )
    return attention.with_output(result, linear(result[0].reshape(batch, seq, n_embd), **c_proj))


def transformer_block(
    x: jax.Array,
    ln_1: dict,
    attn: dict,
    ln_2: dict,
    mlp: dict,
    *,
    n_head: int,
    eps: float,
    mask: jax.Array,
    layer_cache: LayerCache | None = None,
    index: jax.Array | None = None,
    dropout: Dropout | None = None,
    return_probabilities: bool = False,
) -> AttentionResult:
    """Pre-LayerNorm residual block: x + attn(ln_1(x)), then x + mlp(ln_2(x)). Returns (x, layer
    cache), and with `return_probabilities` the attention probabilities too.

    `dropout` (this block's) drops the attention probabilities and both residual branches.
    """
    result = mha(
        layer_norm(x, **ln_1, eps=eps),
        **attn,
        n_head=n_head,
        mask=mask,
        layer_cache=layer_cache,
        index=index,
        dropout=dropout,
        return_probabilities=return_probabilities,
    )
    x = x + drop(result[0], dropout, ATTENTION_OUTPUT)
    x = x + drop(ffn(layer_norm(x, **ln_2, eps=eps), **mlp), dropout, MLP_OUTPUT)
    return attention.with_output(result, x)


def gpt2(
    tokens: jax.Array,
    positions: jax.Array,
    *,
    wte: jax.Array,
    wpe: jax.Array,
    blocks: dict | Sequence[dict],
    ln_f: dict,
    n_head: int,
    eps: float = 1e-5,
    cache: KVCache | None = None,
    options: ApplyOptions = ApplyOptions(),
) -> tuple[jax.Array, KVCache | None]:
    """tokens, positions [batch, seq] -> logits [batch, seq, n_vocab] (output tied to `wte`), or
    what `options.output` asks for in their place (`shared.apply_options.ApplyOptions`).

    `blocks` is either the canonical stacked tree, run with `lax.scan`, or one dict per layer, run
    as an unrolled loop over separate buffers (the faster choice for decoding on CPU).
    `options.dropout` is for training only (`shared.dropout`); None runs the deterministic
    forward. `options.remat` keeps only each block's input for the backward pass, which
    recomputes the rest (`jax.checkpoint`).
    """
    check_tokens(tokens.shape, wpe.shape[0])
    dropout, attentions = options.dropout, options.output == "attentions"
    x = drop(lookup(wte, tokens) + lookup(wpe, positions), dropout, EMBEDDINGS)
    mask = attention.attention_mask(cache, tokens.shape[1])
    index = None if cache is None else cache.index
    layer_caches = (
        [None] * _n_layers(blocks) if cache is None else list(zip(cache.k, cache.v, strict=True))
    )

    def layer(
        x: jax.Array, block: dict, layer_cache: LayerCache | None, i: int | jax.Array
    ) -> tuple[jax.Array, LayerCache | None, jax.Array | None]:
        x, layer_cache, *probabilities = transformer_block(
            x, **block, n_head=n_head, eps=eps, mask=mask, layer_cache=layer_cache, index=index,
            dropout=None if dropout is None else dropout.block(i),
            return_probabilities=attentions,
        )  # fmt: skip
        return x, layer_cache, probabilities[0] if attentions else None

    if options.remat:
        layer = jax.checkpoint(layer, static_argnums=() if isinstance(blocks, Mapping) else (3,))
    if isinstance(blocks, Mapping):

        def scanned(
            x: jax.Array, xs: tuple[dict, LayerCache | None, jax.Array]
        ) -> tuple[jax.Array, tuple[LayerCache | None, jax.Array | None, jax.Array | None]]:
            y, layer_cache, probabilities = layer(x, *xs)
            block_input = x if options.output == "hidden_states" else None
            return y, (layer_cache, block_input, probabilities)

        stacked = None if cache is None else (jnp.stack(cache.k), jnp.stack(cache.v))
        layers = jnp.arange(_n_layers(blocks))
        x, (new_caches, block_inputs, probabilities) = jax.lax.scan(
            scanned, x, (blocks, stacked, layers)
        )
        # None exactly when there is no cache: the layers then return no layer cache
        new_caches = None if new_caches is None else list(zip(*new_caches, strict=True))
    else:
        new_caches, block_inputs, probabilities = [], [], []
        for i, (block, layer_cache) in enumerate(zip(blocks, layer_caches, strict=True)):
            block_inputs.append(x)
            x, layer_cache, layer_probabilities = layer(x, block, layer_cache, i)
            new_caches.append(layer_cache)
            probabilities.append(layer_probabilities)
    output = model_output(
        options, block_inputs, probabilities, x, lambda h: layer_norm(h, **ln_f, eps=eps), wte
    )
    if cache is not None:
        assert new_caches is not None, "a cached forward returns every layer's cache"
        k, v = zip(*new_caches, strict=True)
        cache = kv_cache.advance(cache, k, v, tokens.shape[1])
    return output, cache


def _n_layers(blocks: dict | Sequence[dict]) -> int:
    if isinstance(blocks, Mapping):
        return jax.tree.leaves(blocks)[0].shape[0]
    return len(blocks)
