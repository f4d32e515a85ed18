"""GPT-2's activation, one definition for every backend so their logits and gradients agree bitwise.

`jax.nn.gelu(approximate=True)` and `keras.activations.gelu(approximate=True)` compute the same
function with other roundings: in bfloat16 a haiku backend on `jax.nn.gelu` had gradients 1.1%
away from the others.

For the backward pass the GELU keeps only its input and recomputes its tanh (`jax.checkpoint`), as
PyTorch's GELU does, instead of keeping the intermediates of its formula, each as large as the
MLP's [tokens, 4 * n_embd] activations. That lowers the training step's temporary memory at the
same speed; the gradients are computed by the same operations as before.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


@jax.checkpoint
def gelu(x: jax.Array) -> jax.Array:
    """GELU, tanh approximation, as in the original GPT-2."""
    return 0.5 * x * (1.0 + jnp.tanh(jnp.sqrt(2.0 / jnp.pi) * (x + 0.044715 * x**3)))
