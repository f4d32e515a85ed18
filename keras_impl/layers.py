"""GPT-2's building blocks as Keras 3 layers: LayerNorm, causal self-attention, MLP, the block.

Weights are named as in OpenAI's checkpoint (`c_attn`, `c_proj`, `c_fc`, `ln_1`, ...) and are Keras
`Dense` / `LayerNorm` weights (`kernel` [in, out], `bias`, `gamma`, `beta`), so `model.summary()`
reads like the paper. The masks and attention come from `shared.attention`, the KV cache from
`shared.kv_cache`: they are plain JAX functions, which is why this backend runs Keras on JAX only.

Shapes: x is [batch, seq, n_embd]; a layer's cache is (k, v), each
[batch * n_head, slots, head_dim].
"""

from __future__ import annotations

from typing import Any, cast

import jax
import keras
from keras import ops

from shared import attention
from shared.activations import gelu
from shared.attention import AttentionResult
from shared.dropout import ATTENTION_OUTPUT, MLP_OUTPUT, Dropout, drop
from shared.kv_cache import LayerCache
from shared.linear import over_rows

GPT2_INIT_STD = 0.02
"""Standard deviation of GPT-2's weight initialisation (residual projections are scaled down)."""


# Keras annotates no initializer parameter; pyright infers `str` from their string defaults, so
# passing an `Initializer` object (which Keras takes) needs `pyright: ignore[reportArgumentType]`.
def _normal(stddev: float) -> keras.initializers.Initializer:
    return keras.initializers.RandomNormal(mean=0.0, stddev=stddev)


# Keras annotates `activation_quantizer` as `str` from its "default"; it takes None.
WEIGHT_ONLY_INT8 = keras.quantizers.Int8QuantizationConfig(
    activation_quantizer=None  # pyright: ignore[reportArgumentType]
)
"""Keras' own int8 with its activation quantizer off: int8 weights with one scale per output
channel, float inputs. (Keras' default int8 also rounds each layer's input to int8 per token.)"""


def weights_dtype(policy: keras.DTypePolicy, int8: bool) -> dict[str, Any]:
    """A `Dense`'s or `Embedding`'s dtype keywords: `policy`, or with `int8` Keras' weight-only
    int8 over it (the layer builds an int8 kernel and its `kernel_scale` directly)."""
    if not int8:
        return {"dtype": policy}
    quantized = keras.dtype_policies.QuantizedDTypePolicy(mode="int8", source_name=policy.name)
    return {"dtype": quantized, "quantization_config": WEIGHT_ONLY_INT8}


def _dense(units: int, stddev: float, name: str, policy: keras.DTypePolicy, int8: bool) -> Dense:
    return Dense(
        units,
        kernel_initializer=_normal(stddev),  # pyright: ignore[reportArgumentType]
        name=name,
        **weights_dtype(policy, int8),
    )


def _last_dim(input_shape: tuple[int | None, ...]) -> int:
    """The feature width of a layer's input, which must be known to build its weights."""
    dim = input_shape[-1]
    if dim is None:
        raise ValueError(f"The last dimension of the input shape {input_shape} must be known.")
    return dim


@keras.saving.register_keras_serializable(package="gpt2")
class Dense(keras.layers.Dense):
    """`keras.layers.Dense` (same weights, `kernel` [in, out] and `bias`) applied to all positions
    as one 2-D product, as every backend does (`shared.linear` says why)."""

    def call(self, inputs: jax.Array, training: bool | None = None) -> jax.Array:
        apply = super().call
        # Keras is untyped; on the JAX backend its layers return jax.Array.
        return over_rows(lambda rows: cast(jax.Array, apply(rows, training=training)), inputs)


@keras.saving.register_keras_serializable(package="gpt2")
class LayerNorm(keras.layers.Layer):
    """Layer normalisation over the last axis with float32 statistics, as in GPT-2.

    The mean and variance are computed in float32 and the normalised values are cast back to the
    input dtype before `gamma`/`beta` are applied, exactly as the other backends do, so bfloat16
    weights behave the same everywhere (`keras.layers.LayerNormalization` scales in float32).

    Args:
        epsilon: added to the variance before the square root (GPT-2 uses 1e-5).
        **kwargs: passed to `keras.layers.Layer` (`name`, `dtype`, ...).

    Example:

    ```python
    import numpy as np
    from keras_impl import LayerNorm

    x = np.random.default_rng(0).normal(size=(2, 3, 8)).astype("float32")
    y = LayerNorm(epsilon=1e-5)(x)  # [2, 3, 8], zero mean and unit variance per row
    assert abs(float(y.mean())) < 1e-5
    ```
    """

    def __init__(self, epsilon: float = 1e-5, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.epsilon = epsilon

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        dim = input_shape[-1]
        self.gamma = self.add_weight(shape=(dim,), initializer="ones", name="gamma")
        self.beta = self.add_weight(shape=(dim,), initializer="zeros", name="beta")

    def call(self, x: jax.Array) -> jax.Array:
        # `keras.ops` is untyped (pyright infers optional results); on JAX they are jax.Array.
        x32 = cast(jax.Array, ops.cast(x, "float32"))
        mean = cast(jax.Array, ops.mean(x32, axis=-1, keepdims=True))
        variance = cast(jax.Array, ops.var(x32, axis=-1, keepdims=True))
        inverse_std = cast(jax.Array, ops.rsqrt(variance + self.epsilon))
        normalised = ops.cast((x32 - mean) * inverse_std, x.dtype)
        return cast(jax.Array, normalised * self.gamma + self.beta)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "epsilon": self.epsilon}


@keras.saving.register_keras_serializable(package="gpt2")
class CausalSelfAttention(keras.layers.Layer):
    """Multi-head causal self-attention with a fused QKV projection (`c_attn`) and `c_proj`.

    Called as `layer(x, attention_mask, layer_cache=None, index=None, dropout=None)` and returns
    `(y, layer_cache)`: y is [batch, seq, n_embd]; with a cache the new keys and values are written
    at slot `index` and the updated (k, v) is returned, otherwise the second output is None.
    `attention_mask` comes from `shared.attention.attention_mask`; `dropout` (a
    `shared.dropout.Dropout`, training only) drops attention probabilities.

    Args:
        n_head: number of attention heads; n_embd must be divisible by it.
        residual_std: standard deviation of `c_proj`'s initial kernel (GPT-2 scales the residual
            projections by 1/sqrt(2 * n_layer)).
        int8: hold `c_attn` and `c_proj` as Keras' weight-only int8 (inference).
        **kwargs: passed to `keras.layers.Layer`.

    Example:

    ```python
    import numpy as np
    from keras_impl import CausalSelfAttention
    from shared.attention import attention_mask

    x = np.zeros((2, 5, 32), "float32")
    y, _ = CausalSelfAttention(n_head=4)(x, attention_mask(None, 5))
    assert y.shape == (2, 5, 32)
    ```
    """

    def __init__(
        self, n_head: int, residual_std: float = GPT2_INIT_STD, int8: bool = False, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.n_head = n_head
        self.residual_std = residual_std
        self.int8 = int8

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        n_embd = _last_dim(input_shape)
        if n_embd % self.n_head:
            raise ValueError(
                f"{self.name}: n_embd ({n_embd}) must be divisible by n_head ({self.n_head})."
            )
        policy, int8 = self.dtype_policy, self.int8
        self.c_attn = _dense(3 * n_embd, GPT2_INIT_STD, "c_attn", policy, int8)
        self.c_proj = _dense(n_embd, self.residual_std, "c_proj", policy, int8)
        self.c_attn.build(input_shape)
        self.c_proj.build(input_shape)

    def call(
        self,
        x: jax.Array,
        attention_mask: jax.Array,
        layer_cache: LayerCache | None = None,
        index: jax.Array | None = None,
        dropout: Dropout | None = None,
        return_attention_scores: bool = False,
    ) -> AttentionResult:
        """(output, updated layer cache or None), and with `return_attention_scores` (as
        `keras.layers.MultiHeadAttention`'s) the attention probabilities [batch, n_head, seq,
        keys] too."""
        batch, seq, n_embd = x.shape
        qkv = cast(
            jax.Array,
            ops.reshape(self.c_attn(x), (batch, seq, 3, self.n_head, n_embd // self.n_head)),
        )
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        result = attention.self_attention(
            q, k, v, attention_mask, layer_cache, index, dropout,
            return_probabilities=return_attention_scores,
        )  # fmt: skip
        return attention.with_output(
            result, self.c_proj(ops.reshape(result[0], (batch, seq, n_embd)))
        )

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "n_head": self.n_head,
            "residual_std": self.residual_std,
            "int8": self.int8,
        }


@keras.saving.register_keras_serializable(package="gpt2")
class MLP(keras.layers.Layer):
    """Position-wise feed-forward: `c_fc` (n_embd -> 4*n_embd), GELU (tanh approximation), `c_proj`.

    Args:
        residual_std: standard deviation of `c_proj`'s initial kernel.
        int8: hold `c_fc` and `c_proj` as Keras' weight-only int8 (inference).
        **kwargs: passed to `keras.layers.Layer`.

    Example:

    ```python
    import numpy as np
    from keras_impl import MLP

    mlp = MLP()
    y = mlp(np.ones((2, 5, 32), "float32"))
    assert y.shape == (2, 5, 32) and mlp.c_fc.kernel.shape == (32, 128)  # hidden width 4 x 32
    ```
    """

    def __init__(
        self, residual_std: float = GPT2_INIT_STD, int8: bool = False, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.residual_std = residual_std
        self.int8 = int8

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        n_embd = _last_dim(input_shape)
        policy, int8 = self.dtype_policy, self.int8
        self.c_fc = _dense(4 * n_embd, GPT2_INIT_STD, "c_fc", policy, int8)
        self.c_proj = _dense(n_embd, self.residual_std, "c_proj", policy, int8)
        self.c_fc.build(input_shape)
        self.c_proj.build((*input_shape[:-1], 4 * n_embd))

    def call(self, x: jax.Array) -> jax.Array:
        return self.c_proj(gelu(self.c_fc(x)))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "residual_std": self.residual_std, "int8": self.int8}


@keras.saving.register_keras_serializable(package="gpt2")
class TransformerBlock(keras.layers.Layer):
    """Pre-LayerNorm residual block: x + attn(ln_1(x)), then x + mlp(ln_2(x)).

    Called like `CausalSelfAttention` and returns `(x, layer_cache)` the same way. `dropout` (this
    block's, `Dropout.block(i)`) drops the attention probabilities and both residual branches with
    explicit keys, so the masks equal the other backends' (Keras' own `Dropout` layer draws its
    masks from a `SeedGenerator` and could not match them).

    Args:
        n_head: number of attention heads.
        ln_eps: LayerNorm epsilon.
        residual_std: standard deviation of the initial `c_proj` kernels.
        int8: hold the four projections as Keras' weight-only int8 (inference).
        **kwargs: passed to `keras.layers.Layer`.

    Example:

    ```python
    import numpy as np
    from keras_impl import TransformerBlock
    from shared.attention import attention_mask

    block = TransformerBlock(n_head=4, residual_std=0.02 / 2)
    x, _ = block(np.ones((1, 7, 32), "float32"), attention_mask(None, 7))
    assert x.shape == (1, 7, 32)
    ```
    """

    def __init__(
        self,
        n_head: int,
        ln_eps: float = 1e-5,
        residual_std: float = GPT2_INIT_STD,
        int8: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.n_head, self.ln_eps, self.residual_std = n_head, ln_eps, residual_std
        self.int8 = int8
        policy = self.dtype_policy
        self.ln_1 = LayerNorm(epsilon=ln_eps, name="ln_1", dtype=policy)
        self.attn = CausalSelfAttention(n_head, residual_std, int8, name="attn", dtype=policy)
        self.ln_2 = LayerNorm(epsilon=ln_eps, name="ln_2", dtype=policy)
        self.mlp = MLP(residual_std, int8, name="mlp", dtype=policy)

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        for layer in (self.ln_1, self.attn, self.ln_2, self.mlp):
            layer.build(input_shape)

    def call(
        self,
        x: jax.Array,
        attention_mask: jax.Array,
        layer_cache: LayerCache | None = None,
        index: jax.Array | None = None,
        dropout: Dropout | None = None,
        return_attention_scores: bool = False,
    ) -> AttentionResult:
        result: AttentionResult = self.attn(
            self.ln_1(x), attention_mask, layer_cache, index, dropout=dropout,
            return_attention_scores=return_attention_scores,
        )  # fmt: skip
        x = x + drop(result[0], dropout, ATTENTION_OUTPUT)
        x = x + drop(self.mlp(self.ln_2(x)), dropout, MLP_OUTPUT)
        return attention.with_output(result, x)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "n_head": self.n_head,
            "ln_eps": self.ln_eps,
            "residual_std": self.residual_std,
            "int8": self.int8,
        }
