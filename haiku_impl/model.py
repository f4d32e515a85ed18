"""GPT-2 as dm-haiku modules, written like haiku's own `examples/transformer/model.py`.

Each module takes its configuration in the constructor and creates its submodules there, so parameter
names follow GPT-2's parts: `gpt2/~/h0/~/attn/~/c_attn` holds `w` [n_embd, 3*n_embd] and `b`.
The blocks are separate modules called in a Python loop rather than `hk.layer_stack`, because on
XLA:CPU a scan over stacked weights copies every layer's slice and decoded much slower.
Shapes: x is [batch, seq, n_embd].
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping

import haiku as hk
import jax
import jax.numpy as jnp

from shared import attention, kv_cache
from shared.activations import gelu
from shared.apply_options import ApplyOptions
from shared.attention import AttentionResult
from shared.config import GPT2Config, check_tokens
from shared.dropout import ATTENTION_OUTPUT, EMBEDDINGS, MLP_OUTPUT, Dropout, drop
from shared.embedding import lookup
from shared.kv_cache import KVCache, LayerCache
from shared.linear import AdaptedWeight, linear
from shared.logits import model_output
from shared.quantization import QuantizedWeight, Weight

MODEL_NAME = "gpt2"
"""The top module's name: the first scope of every haiku parameter name."""

INIT_STD = 0.02


def _residual_init(config: GPT2Config) -> hk.initializers.Initializer:
    """GPT-2 scales the projections that feed the residual stream by 1/sqrt(2*n_layer)."""
    return hk.initializers.RandomNormal(INIT_STD / math.sqrt(2 * config.n_layer))


class LayerNorm(hk.Module):
    """LayerNorm over the last axis with fp32 statistics (so bf16 weights normalise accurately).

    Written out rather than `hk.LayerNorm`, which computes statistics in the input dtype and
    rounds differently from the other backends.
    """

    def __init__(self, eps: float, name: str | None = None) -> None:
        super().__init__(name=name)
        self.eps = eps

    def __call__(self, x: jax.Array) -> jax.Array:
        scale = hk.get_parameter("scale", [x.shape[-1]], x.dtype, init=jnp.ones)
        offset = hk.get_parameter("offset", [x.shape[-1]], x.dtype, init=jnp.zeros)
        x32 = x.astype(jnp.float32)
        mean = jnp.mean(x32, axis=-1, keepdims=True)
        variance = jnp.var(x32, axis=-1, keepdims=True)
        return ((x32 - mean) * jax.lax.rsqrt(variance + self.eps)).astype(x.dtype) * scale + offset


def _held(name: str, value: jax.Array, scale_shape: list[int]) -> Weight:
    """Parameter `name` as the kernels take it: an int8 one with its scales, parameter
    `{name}_scale` of the same module (`shared.quantization`), a float one as it is."""
    if value.dtype != jnp.int8:
        return value
    scale = hk.get_parameter(f"{name}_scale", scale_shape, jnp.float32, init=jnp.ones)
    return QuantizedWeight(value, scale)


class Linear(hk.Linear):
    """`hk.Linear`'s parameters (`w` [in, out] and `b`) run by `shared.linear.linear`: all
    positions as one 2-D product, as every backend does, and an int8 `w` with its `w_scale`
    [1, out] too."""

    def __call__(self, inputs: jax.Array) -> jax.Array:
        shape = [inputs.shape[-1], self.output_size]
        w = hk.get_parameter("w", shape, inputs.dtype, init=self.w_init)
        b = hk.get_parameter("b", [self.output_size], inputs.dtype, init=self.b_init or jnp.zeros)
        return linear(inputs, _held("w", w, [1, self.output_size]), b)


class Embed(hk.Embed):
    """`hk.Embed`, whose table may be int8 with one scale per row (`embeddings_scale`)."""

    def table(self) -> Weight:
        """The embedding matrix [vocab_size, embed_dim], as `shared.embedding.lookup` takes it."""
        embeddings = self.embeddings
        return _held("embeddings", embeddings, [embeddings.shape[0], 1])


class CausalSelfAttention(hk.Module):
    """Multi-head self-attention with a fused QKV projection, through the layer's KV cache."""

    def __init__(self, config: GPT2Config, name: str | None = None) -> None:
        super().__init__(name=name)
        self.n_head = config.n_head
        normal = hk.initializers.RandomNormal(INIT_STD)
        self.c_attn = Linear(3 * config.n_embd, w_init=normal, name="c_attn")
        self.c_proj = Linear(config.n_embd, w_init=_residual_init(config), name="c_proj")

    def __call__(
        self,
        x: jax.Array,
        mask: jax.Array,
        layer_cache: LayerCache | None,
        index: jax.Array | None,
        dropout: Dropout | None = None,
        return_probabilities: bool = False,
    ) -> AttentionResult:
        """x [batch, seq, n_embd] -> (attended [batch, seq, n_embd], updated (k, v) or None),
        and with `return_probabilities` the attention probabilities [batch, n_head, seq, keys]."""
        batch, seq, n_embd = x.shape
        qkv = self.c_attn(x).reshape(batch, seq, 3, self.n_head, n_embd // self.n_head)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        result = attention.self_attention(
            q, k, v, mask, layer_cache, index, dropout, return_probabilities=return_probabilities
        )
        return attention.with_output(result, self.c_proj(result[0].reshape(batch, seq, n_embd)))


class MLP(hk.Module):
    """Position-wise feed-forward: n_embd -> 4*n_embd -> GELU (tanh approximation) -> n_embd."""

    def __init__(self, config: GPT2Config, name: str | None = None) -> None:
        super().__init__(name=name)
        normal = hk.initializers.RandomNormal(INIT_STD)
        self.c_fc = Linear(4 * config.n_embd, w_init=normal, name="c_fc")
        self.c_proj = Linear(config.n_embd, w_init=_residual_init(config), name="c_proj")

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.c_proj(gelu(self.c_fc(x)))


class Block(hk.Module):
    """Pre-LayerNorm residual block: x + attn(ln_1(x)), then x + mlp(ln_2(x)).

    `dropout` (this block's, training only) drops the attention probabilities and both residual
    branches; its key is passed in rather than taken from `hk.next_rng_key`, so the masks are
    the other backends' masks.
    """

    def __init__(self, config: GPT2Config, name: str | None = None) -> None:
        super().__init__(name=name)
        self.ln_1 = LayerNorm(config.ln_eps, name="ln_1")
        self.attn = CausalSelfAttention(config, name="attn")
        self.ln_2 = LayerNorm(config.ln_eps, name="ln_2")
        self.mlp = MLP(config, name="mlp")

    def __call__(
        self,
        x: jax.Array,
        mask: jax.Array,
        layer_cache: LayerCache | None,
        index: jax.Array | None,
        dropout: Dropout | None = None,
        return_probabilities: bool = False,
    ) -> AttentionResult:
        """(x, layer cache), and with `return_probabilities` the attention probabilities."""
        result = self.attn(self.ln_1(x), mask, layer_cache, index, dropout, return_probabilities)
        x = x + drop(result[0], dropout, ATTENTION_OUTPUT)
        return attention.with_output(result, x + drop(self.mlp(self.ln_2(x)), dropout, MLP_OUTPUT))


class GPT2(hk.Module):
    """The GPT-2 language model; the output projection is tied to the `wte` embedding matrix."""

    def __init__(self, config: GPT2Config, name: str = MODEL_NAME) -> None:
        super().__init__(name=name)
        normal = hk.initializers.RandomNormal(INIT_STD)
        self.wte = Embed(config.n_vocab, config.n_embd, w_init=normal, name="wte")
        self.wpe = hk.Embed(config.n_ctx, config.n_embd, w_init=normal, name="wpe")
        self.blocks = [Block(config, name=f"h{i}") for i in range(config.n_layer)]
        self.ln_f = LayerNorm(config.ln_eps, name="ln_f")

    def __call__(
        self,
        tokens: jax.Array,
        positions: jax.Array,
        cache: KVCache | None,
        options: ApplyOptions = ApplyOptions(),
    ) -> tuple[jax.Array, KVCache | None]:
        """tokens, positions [batch, seq] int32 -> (logits [batch, seq, n_vocab], cache), or in
        place of the logits what `options.output` asks for (`shared.apply_options.ApplyOptions`).

        With `cache=None` this is the causal training forward; with a cache, layer i writes its new
        keys/values into `cache.k[i]`, `cache.v[i]` at `cache.index` and attends to all filled slots.
        `options.dropout` (`shared.dropout`) is for training; None runs the deterministic forward.
        `options.remat` keeps only each block's input for the backward pass, which recomputes the
        rest (`hk.remat`).
        """
        check_tokens(tokens.shape, self.wpe.vocab_size)
        dropout, attentions = options.dropout, options.output == "attentions"
        seq = tokens.shape[1]
        wte = self.wte.table()
        embedded = lookup(wte, tokens) + lookup(self.wpe.embeddings, positions)
        x = drop(embedded, dropout, EMBEDDINGS)
        mask = attention.attention_mask(cache, seq)
        index = None if cache is None else cache.index
        layer_caches = (
            [None] * len(self.blocks) if cache is None else zip(cache.k, cache.v, strict=True)
        )
        new_caches, block_inputs, probabilities = [], [], []
        for i, (block, layer_cache) in enumerate(zip(self.blocks, layer_caches, strict=True)):
            block_dropout = None if dropout is None else dropout.block(i)
            run = functools.partial(block, mask=mask, index=index, dropout=block_dropout,
                                    return_probabilities=attentions)  # fmt: skip
            block_inputs.append(x)
            x, layer_cache, *layer_probabilities = (hk.remat(run) if options.remat else run)(
                x, layer_cache=layer_cache
            )
            new_caches.append(layer_cache)
            probabilities += layer_probabilities
        output = model_output(options, block_inputs, probabilities, x, self.ln_f, wte)
        if cache is not None:
            k, v = zip(*new_caches, strict=True)
            cache = kv_cache.advance(cache, k, v, seq)
        return output, cache


def forward(
    tokens: jax.Array,
    positions: jax.Array,
    cache: KVCache | None,
    options: ApplyOptions = ApplyOptions(),
    *,
    config: GPT2Config,
) -> tuple[jax.Array, KVCache | None]:
    """The function `hk.transform` wraps: build the model for `config` and run it."""
    return GPT2(config)(tokens, positions, cache, options)


def transformed(config: GPT2Config) -> hk.Transformed:
    """`forward` for `config` as a pure (init, apply) pair; apply needs no PRNG key (dropout's key
    is an explicit argument)."""
    return hk.without_apply_rng(
        hk.transform(lambda *args, **kwargs: forward(*args, config=config, **kwargs))
    )


def lora_forward(
    tokens: jax.Array,
    positions: jax.Array,
    cache: KVCache | None,
    options: ApplyOptions,
    adapters: Mapping[str, Mapping[str, jax.Array]],
    *,
    config: GPT2Config,
    scale: float,
) -> tuple[jax.Array, KVCache | None]:
    """`forward` with each adapted `w` read as w + scale * lora_a @ lora_b: a custom getter
    hands the modules the weight with its factors (`shared.linear.AdaptedWeight`), so they stay
    as they are. `adapters` maps a module scope (`gpt2/~/h0/~/attn/~/c_attn`) to its
    `{lora_a, lora_b}`."""

    def add_adapter(
        next_getter: Callable, value: jax.Array, context: hk.GetterContext
    ) -> jax.Array | AdaptedWeight:
        value = next_getter(value)
        adapter = adapters.get(context.module_name)
        if context.name != "w" or adapter is None:
            return value
        return AdaptedWeight(value, adapter["lora_a"], adapter["lora_b"], scale)

    # Haiku's getter type promises an array; Haiku checks only the shape, which AdaptedWeight has.
    with hk.custom_getter(add_adapter):  # pyright: ignore[reportArgumentType]
        return forward(tokens, positions, cache, options, config=config)


def transformed_lora(config: GPT2Config, scale: float) -> hk.Transformed:
    """`lora_forward` as a pure (init, apply) pair; the adapters are apply's last argument."""
    return hk.without_apply_rng(
        hk.transform(lambda *args: lora_forward(*args, config=config, scale=scale))
    )
