"""Weight-only int8: per-output-channel symmetric int8 weights with float32 scales.

Output column j of a projection is sum_i x_i w_ij; with w_ij = q_ij * s_j the scale factors out,
so x @ w = (x @ q) * s exactly in real arithmetic. The int8 values therefore enter the product as
they are and one multiply per output column restores the scale, inside the jitted program: the
weights stay int8 on the device, a quarter of float32's bytes. The tied embedding's output
channels (as the head) are its vocabulary rows, so one scale per row serves the lookup and the
head. Biases, LayerNorms and `wpe` stay float32, and so does the KV cache.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeAlias

import jax
import jax.numpy as jnp
import numpy as np

from shared import params
from shared.params import Params

INT8_MAX = 127
"""Symmetric range: values in [-127, 127], so negating a weight negates its int8 value."""

INPUT_AXIS: dict[str, int] = {
    "wte": -1,
    "blocks/attn/c_attn/w": -2,
    "blocks/attn/c_proj/w": -2,
    "blocks/mlp/c_fc/w": -2,
    "blocks/mlp/c_proj/w": -2,
}
"""Canonical path of every quantised weight -> its input axis, the one a scale is taken over:
a projection [..., in, out] has one scale per output column, `wte` [n_vocab, n_embd] one per
vocabulary row."""


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class QuantizedWeight:
    """An int8 weight and its float32 scales: `values * scale` is the weight it stands for.

    `scale` has the weight's shape with the input axis kept at size 1 ([..., 1, out] for a
    projection, [n_vocab, 1] for `wte`), so it broadcasts against `values` and against a
    product's output. A pytree: `jax.tree.map`, `jax.jit` and `jax.device_put` see both arrays.
    """

    values: Any
    scale: Any

    @property
    def shape(self) -> tuple[int, ...]:
        """The weight's shape (the canonical tree's validator checks it)."""
        return tuple(self.values.shape)

    def __getitem__(self, index: int) -> QuantizedWeight:
        """Layer `index` of a stacked weight (a leading axis; the input axis is never indexed)."""
        return QuantizedWeight(self.values[index], self.scale[index])


jax.export.register_pytree_node_serialization(
    QuantizedWeight,
    serialized_name="gpt2.QuantizedWeight",
    serialize_auxdata=lambda _: b"",
    deserialize_auxdata=lambda _: (),
)  # the exported prefill and decode programs (`shared.program_cache`) take int8 weights too

Weight: TypeAlias = jax.Array | QuantizedWeight
"""What a kernel multiplies by: a float array or an int8 one with its scales."""


def quantize_array(w: Any, axis: int) -> QuantizedWeight:
    """Round `w` to int8 with scale max|w| / 127 taken over `axis`; an all-zero channel gets scale 1.

    NumPy in, NumPy out (a checkpoint from disk is quantised on the host and sent once); JAX in,
    JAX out.
    """
    xp = np if isinstance(w, np.ndarray) else jnp
    w = xp.asarray(w, np.float32)
    peak = xp.max(xp.abs(w), axis=axis, keepdims=True)
    scale = xp.where(peak > 0, peak / INT8_MAX, xp.ones_like(peak))
    values = xp.clip(xp.round(w / scale), -INT8_MAX, INT8_MAX).astype(np.int8)
    return QuantizedWeight(values, scale)


def dequantize_array(w: QuantizedWeight) -> Any:
    """The float32 weight `w` stands for."""
    return w.values.astype(np.float32) * w.scale


def quantize(tree: Params) -> Params:
    """A float canonical tree with every projection and `wte` held as `QuantizedWeight`."""
    flat = params.flatten(tree)
    return params.unflatten(
        {path: quantize_array(v, INPUT_AXIS[path]) if path in INPUT_AXIS else v
         for path, v in flat.items()}
    )  # fmt: skip


WEIGHT_DTYPES = ("float32", "bfloat16", "int8")
"""The dtypes a model's weights can be held in for inference."""


def weights_in(tree: Params, dtype: str) -> Params:
    """A canonical tree with its weights in `dtype`, one of `WEIGHT_DTYPES`: float32 and bfloat16
    by casting every leaf, int8 by quantising the float32 weights."""
    if dtype == "int8":
        return quantize(params.cast(tree, np.float32))
    return params.cast(tree, jnp.dtype(dtype))


def dequantize(tree: Params) -> Params:
    """The float32 tree a quantised one stands for (the inverse of `quantize` up to rounding)."""
    return jax.tree.map(
        lambda x: dequantize_array(x) if isinstance(x, QuantizedWeight) else x,
        tree,
        is_leaf=lambda x: isinstance(x, QuantizedWeight),
    )


def matmul(x: jax.Array, w: Weight) -> jax.Array:
    """x [n, in] @ w [in, out]; an int8 w enters the product as is and its scales multiply the
    output columns."""
    if isinstance(w, QuantizedWeight):
        return (x @ w.values.astype(x.dtype)) * w.scale
    return x @ w
